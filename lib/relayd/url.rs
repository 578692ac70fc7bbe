//! The broker address relayd takes: `nats://[USER:PASS@]HOST:PORT/STREAM`
//! (or `nats+tls://`), split into what the NATS client dials and the
//! JetStream stream name. Pure, so it is unit-tested.

/// A parsed broker address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broker {
    /// What the client connects to (`nats://host:port` or `tls://host:port`).
    pub server: String,
    /// TLS was asked for by the scheme.
    pub tls: bool,
    /// The JetStream stream name.
    pub stream: String,
}

impl Broker {
    /// The one subject the stream's messages are published on.
    pub fn subject(&self) -> String {
        format!("syncpipe.{}", self.stream)
    }

    /// The core-NATS subject the live publisher answers on, so a second one
    /// can see it before writing anything.
    pub fn owner_subject(&self) -> String {
        format!("syncpipe-owner.{}", self.stream)
    }
}

/// Parses `nats://HOST:PORT/STREAM`, `nats+tls://…` (also `tls://…`).
pub fn parse(text: &str) -> Result<Broker, String> {
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| format!("{text:?}: expected nats://HOST:PORT/STREAM"))?;
    let tls = match scheme {
        "nats" => false,
        "nats+tls" | "tls" => true,
        other => {
            return Err(format!(
                "{text:?}: scheme {other:?} is not nats:// or nats+tls://"
            ))
        }
    };
    let (authority, stream) = rest
        .split_once('/')
        .ok_or_else(|| format!("{text:?}: no stream name (nats://HOST:PORT/STREAM)"))?;
    if authority.is_empty() {
        return Err(format!("{text:?}: no host"));
    }
    if stream.is_empty()
        || stream.len() > 200
        || !stream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "{text:?}: the stream name must be 1-200 letters, digits, '_' or '-'"
        ));
    }
    let authority = if authority
        .rsplit('@')
        .next()
        .is_some_and(|h| h.contains(':'))
    {
        authority.to_string()
    } else {
        format!("{authority}:4222")
    };
    let server = format!("{}://{authority}", if tls { "tls" } else { "nats" });
    Ok(Broker {
        server,
        tls,
        stream: stream.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_tls() {
        let b = parse("nats://127.0.0.1:4222/www").unwrap();
        assert_eq!(b.server, "nats://127.0.0.1:4222");
        assert!(!b.tls);
        assert_eq!(b.stream, "www");
        assert_eq!(b.subject(), "syncpipe.www");
        let b = parse("nats+tls://u:p@broker/web_1").unwrap();
        assert_eq!(b.server, "tls://u:p@broker:4222");
        assert!(b.tls);
    }

    #[test]
    fn bad_addresses() {
        for bad in [
            "127.0.0.1:4222/www",
            "http://h/www",
            "nats://h",
            "nats://h/",
            "nats:///www",
            "nats://h/a.b",
            "nats://h/a*",
            "nats://h/a b",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
