//! `relayd`: carries the syncpipe stream over NATS JetStream, so one source
//! feeds any number of replicas through a broker.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use syncpipe::cli::{self, Verbosity};
use syncpipe::relayd::{self, Auth, Command, Common, PublishConfig, Retention, SubscribeConfig};

/// Carry the syncpipe stream over NATS JetStream
///
/// `publish` reads the stream (as `watchd` writes it) on stdin and publishes
/// each record as one JetStream message on subject `syncpipe.STREAM`, the
/// stream id and seq in its headers. `subscribe` follows the stream through
/// a durable consumer (one per replica) and writes the records on stdout for
/// `batchd | pushd`; it resumes exactly where its consumer left off, and when
/// it cannot (the cursor was trimmed, the JetStream stream was recreated) it
/// writes a `rescan` of the root so the replica does a full sync.
///
/// $ watchd /srv/www | relayd publish nats://broker:4222/www
///
/// $ relayd subscribe nats://broker:4222/www --durable web1 | batchd -d 1 | env pushd /srv/www
#[derive(Parser, Debug)]
#[command(name = "relayd", version, after_help = cli::exit_codes_help("relayd"))]
struct Args {
    #[command(subcommand)]
    command: Cmd,

    #[command(flatten)]
    verbosity: Verbosity,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Publish the stream on stdin to JetStream stream STREAM
    ///
    /// Makes the stream (file storage, discard old) when it does not exist.
    /// Refuses (exit 16) when another publisher is live on it, or wrote to it
    /// since this one started. Stops at end of input.
    Publish {
        /// nats://HOST:PORT/STREAM or nats+tls://HOST:PORT/STREAM
        url: String,
        #[command(flatten)]
        conn: Conn,
        /// When creating the stream: keep at most this many messages
        #[arg(long, value_name = "N", help_heading = "Retention")]
        max_msgs: Option<i64>,
        /// When creating the stream: keep at most this many bytes
        #[arg(long, value_name = "BYTES", help_heading = "Retention")]
        max_bytes: Option<i64>,
        /// When creating the stream: drop messages older than this (7d, 12h)
        #[arg(long, value_name = "DURATION", value_parser = cli::parse_duration, help_heading = "Retention")]
        max_age: Option<Duration>,
    },
    /// Follow JetStream stream STREAM and write the stream on stdout
    ///
    /// SIGUSR1 logs this replica's lag (the consumer's pending count, the
    /// age of the oldest message not acknowledged, the last seq written);
    /// STATUS= under systemd and --status-file/--metrics-file show it too.
    Subscribe {
        /// nats://HOST:PORT/STREAM or nats+tls://HOST:PORT/STREAM
        url: String,
        /// The durable consumer's name, one per replica: it keeps the cursor
        #[arg(long, value_name = "NAME")]
        durable: String,
        /// Also log the lag (pending messages, seconds behind, last seq
        /// written) every DURATION, for units whose STATUS= is pushd's
        #[arg(long, value_name = "DURATION", value_parser = cli::parse_duration)]
        log_lag: Option<Duration>,
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        health: cli::HealthArgs,
    },
}

#[derive(clap::Args, Debug)]
struct Conn {
    /// NATS credentials file (JWT and NKey seed), as `nats --creds` takes
    #[arg(
        long,
        value_name = "FILE",
        env = "NATS_CREDS",
        help_heading = "Connection"
    )]
    creds: Option<PathBuf>,
    /// CA certificate that signed the server's (implies TLS)
    #[arg(long, value_name = "FILE", help_heading = "Connection")]
    tls_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS (with --tls-key)
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        help_heading = "Connection"
    )]
    tls_cert: Option<PathBuf>,
    /// Client key for mutual TLS (with --tls-cert)
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert",
        help_heading = "Connection"
    )]
    tls_key: Option<PathBuf>,
}

impl Conn {
    fn common(&self, url: &str) -> anyhow::Result<Common> {
        let broker = relayd::url::parse(url)
            .map_err(|e| syncpipe::cli::exit::coded(syncpipe::cli::exit::Code::Usage, e))?;
        Ok(Common {
            broker,
            auth: Auth {
                creds: self.creds.clone(),
                tls_ca: self.tls_ca.clone(),
                tls_cert: self.tls_cert.clone(),
                tls_key: self.tls_key.clone(),
            },
        })
    }
}

impl Args {
    fn to_command(&self) -> anyhow::Result<Command> {
        Ok(match &self.command {
            Cmd::Publish {
                url,
                conn,
                max_msgs,
                max_bytes,
                max_age,
            } => Command::Publish(PublishConfig {
                common: conn.common(url)?,
                retention: Retention {
                    max_msgs: *max_msgs,
                    max_bytes: *max_bytes,
                    max_age: *max_age,
                },
            }),
            Cmd::Subscribe {
                url,
                durable,
                conn,
                log_lag,
                health,
            } => Command::Subscribe(SubscribeConfig {
                common: conn.common(url)?,
                durable: durable.clone(),
                log_lag: *log_lag,
                health: health.files(&std::env::current_dir().unwrap_or_default()),
            }),
        })
    }
}

fn main() -> ExitCode {
    let args: Args = cli::parse("relayd");
    cli::run("relayd", args.verbosity, || relayd::run(args.to_command()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Args::command().debug_assert();
    }

    #[test]
    fn bad_urls_are_usage_errors() {
        let args = Args::try_parse_from(["relayd", "publish", "nats://h:1/a.b"]).unwrap();
        let err = args.to_command().unwrap_err();
        assert_eq!(
            syncpipe::cli::exit::code_of(&err),
            syncpipe::cli::exit::Code::Usage
        );
    }
}
