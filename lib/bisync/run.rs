//! One bisync run: open both replicas, lock the pair, load the archive, scan,
//! hash where the plan needs it, plan, report, execute, save the archive,
//! and pick the exit code.

use std::time::{Instant, SystemTime};

use anyhow::Context;

use super::archive::{self, Store};
use super::config::{Config, Spec};
use super::entry::Side;
use super::exec::{self, Status};
use super::local::LocalReplica;
use super::names;
use super::planner::{self, Archive, Op, Policy, Refusal, Scan};
use super::progress::{self, Tally};
use super::remote::RemoteReplica;
use super::replica::Replica;
use super::report::{Outcome, Reporter, Summary};
use crate::cli::exit::{coded, Code};
use crate::wire::path::WirePath;

fn open(spec: &Spec, config: &Config) -> anyhow::Result<Box<dyn Replica + Send>> {
    Ok(match spec {
        Spec::Local(path) => Box::new(LocalReplica::new(
            &spec.key(),
            path,
            config.excludes.clone(),
        )),
        Spec::Ssh { user, host, path } => Box::new(RemoteReplica::connect(
            &spec.key(),
            user.as_deref(),
            host,
            path,
            &config.ssh,
            &config.remote_bisync,
            &config.excludes,
        )?),
    })
}

/// Runs one sync; the exit code tells how it ended. On a terminal its
/// copying shows as a progress bar (the first sync's always, once at its
/// end at least; any other run's when it lasts).
pub(crate) fn once(config: Config) -> anyhow::Result<Code> {
    let tally = Tally::new(Instant::now());
    let bar = crate::cli::progress::Bar::default();
    let tick = |last: bool| {
        if !last || tally.is_first() {
            tally.show_on(&bar, Instant::now());
        }
    };
    progress::ticking(tick, || once_with(config, &tally))
}

fn once_with(config: Config, tally: &Tally) -> anyhow::Result<Code> {
    let started = tally.started;
    let store = store(&config)?;
    let _lock = store.lock()?;
    let (mut a, mut b, owners) = open_pair(&config)?;
    // The archive loads while both replicas are scanned.
    let (old, scan_a, scan_b) = std::thread::scope(|s| {
        let ta = s.spawn(|| a.scan(config.checksum));
        let tb = s.spawn(|| b.scan(config.checksum));
        let old = store.load();
        if old.is_none() {
            tally.set_first();
        }
        crate::log_debug!("archive loaded at {} ms", started.elapsed().as_millis());
        (old, join(ta), join(tb))
    });
    let mut scans = [
        scan_a.with_context(|| format!("scanning {}", config.a.key()))?,
        scan_b.with_context(|| format!("scanning {}", config.b.key()))?,
    ];
    crate::log_debug!("scanned at {} ms", started.elapsed().as_millis());
    let known = old.iter().flat_map(|ar| ar.keys());
    let matching = names::Matching::new(&scans[0], &scans[1], known, config.fold);
    report_clashes(&config, &names::clashes(&scans[0], &scans[1], &matching))?;
    scans[1] = matching.rekey(std::mem::take(&mut scans[1]));
    let mut b = names::Mapped {
        inner: b.as_mut(),
        matching: &matching,
    };
    let settled = settle(
        &config,
        &store,
        [a.as_mut(), &mut b],
        owners,
        old,
        &mut scans,
        tally,
        false,
    )?;
    Ok(match settled.code {
        Code::Synced if !config.exit_changes => Code::Ok,
        code => code,
    })
}

/// Names that differ only in normalization or case, one warning (and with
/// --json one `bisync_name_clash` record) each.
fn report_clashes(config: &Config, clashes: &[names::Clash]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for c in clashes {
        let list: Vec<String> = c
            .paths
            .iter()
            .map(|(side, p)| format!("{side}:{p:?}"))
            .collect();
        if c.matched {
            crate::log_info!(
                "names differing only in {} matched as one file: {}",
                c.kind,
                list.join(", ")
            );
        } else {
            let flag = if c.kind == "case" {
                "--case-insensitive"
            } else {
                "--normalization"
            };
            crate::log_warn!(
                "names differing only in {}: {}; synced as distinct names (one file twice?); \
                 rename one, or run with {flag} to treat them as one file",
                c.kind,
                list.join(", ")
            );
        }
        if config.json {
            #[derive(serde::Serialize)]
            struct Rec<'a> {
                #[serde(rename = "type")]
                kind: &'static str,
                #[serde(flatten)]
                clash: &'a names::Clash,
            }
            serde_json::to_writer(
                &mut out,
                &Rec {
                    kind: "bisync_name_clash",
                    clash: c,
                },
            )
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush())
            .context("writing a name clash record to stdout")?;
        }
    }
    Ok(())
}

/// The pair's archive store.
pub fn store(config: &Config) -> anyhow::Result<Store> {
    let dir = match &config.state_dir {
        Some(d) => d.clone(),
        None => archive::default_dir()?,
    };
    Ok(Store::new(&dir, &config.a.key(), &config.b.key()))
}

pub type Boxed = Box<dyn Replica + Send>;

/// Opens both replicas; owners are kept when both run as root.
pub fn open_pair(config: &Config) -> anyhow::Result<(Boxed, Boxed, bool)> {
    let mut a = open(&config.a, config)?;
    let mut b = open(&config.b, config)?;
    let owners = a.is_root() && b.is_root();
    a.set_owners(owners)?;
    b.set_owners(owners)?;
    Ok((a, b, owners))
}

/// How a run that got as far as a plan ended.
pub struct Settled {
    pub code: Code,
    pub summary: Summary,
    /// The archive as saved (the old one after a dry run).
    pub archive: Option<Archive>,
    /// Every path a step was planned on, on either replica (rename targets
    /// and conflict copies too): what the run may have changed.
    pub touched: Vec<WirePath>,
}

/// The rest of a run once both replicas are scanned: hash where the plan
/// needs it, plan, report, execute, save the archive. `scans` get the hashes
/// read on the way; `tally` hears how far the run got. `watching`: a run of
/// `--watch`, whose "in sync" runs are not worth a line in the log.
#[allow(clippy::too_many_arguments)]
pub fn settle(
    config: &Config,
    store: &Store,
    reps: [&mut dyn Replica; 2],
    owners: bool,
    old: Option<Archive>,
    scans: &mut [Scan; 2],
    tally: &Tally,
    watching: bool,
) -> anyhow::Result<Settled> {
    let started = tally.started;
    let [a, b] = reps;
    // --size-only: equal sizes are equal content, nothing to hash.
    let need = if config.size_only {
        Vec::new()
    } else {
        planner::needs_hash(old.as_ref(), &scans[0], &scans[1], owners)
    };
    if !need.is_empty() {
        crate::log_info!("hashing {} files changed on both sides", need.len());
        tally.hashing();
        for (i, rep) in [&mut *a, &mut *b].into_iter().enumerate() {
            let hashes = rep
                .hash(&need)
                .with_context(|| format!("hashing {} files on {}", need.len(), rep.name()))?;
            for (path, hash) in need.iter().zip(hashes) {
                if let Some(e) = scans[i].get_mut(path) {
                    e.hash = hash;
                }
            }
        }
    }
    let [scan_a, scan_b] = &*scans;

    let policy = Policy {
        prefer: config.prefer,
        max_delete: config.max_delete,
        owners,
        hosts: [a.host().to_string(), b.host().to_string()],
        now: SystemTime::now(),
        size_only: config.size_only,
        sentinel: config.sentinel.clone(),
        force: config.force,
    };
    let stdout = std::io::stdout().lock();
    let mut reporter = Reporter::new(stdout, config.json, config.dry_run);
    let mut summary = Summary {
        first_sync: old.is_none(),
        dry_run: config.dry_run,
        ..Summary::default()
    };
    let mut plan = match planner::plan(old.as_ref(), scan_a, scan_b, &policy) {
        Ok(plan) => plan,
        Err(refusal) => {
            summary.status = Some(Outcome::Refused);
            summary.reason = Some(refusal.to_string());
            if config.json {
                reporter.summary(&summary)?;
            }
            let what = if refusal.side() == Side::A {
                config.a.key()
            } else {
                config.b.key()
            };
            let code = match refusal {
                Refusal::AllChanged { .. } => Code::MassChange,
                _ => Code::Refused,
            };
            return Err(coded(code, format!("{what}: {refusal}")));
        }
    };
    crate::log_debug!("planned at {} ms", started.elapsed().as_millis());
    summary.actions = plan.actions.len() as u64;
    summary.conflicts = plan.conflicts.len() as u64;
    for c in &plan.conflicts {
        reporter.conflict(c)?;
    }
    if config.json || config.dry_run {
        for action in &plan.actions {
            reporter.action(action, None)?;
        }
    }
    let count = |summary: &mut Summary, op: &Op| match op {
        Op::Copy { src, .. } => {
            summary.copied += 1;
            summary.bytes += src.size;
        }
        Op::Remove { .. } | Op::Rmdir { .. } => summary.deleted += 1,
        Op::Rename { .. } => summary.renamed += 1,
        _ => {}
    };
    let kept_copies = plan.conflicts.iter().any(|c| c.copy.is_some());
    if config.dry_run {
        for action in &plan.actions {
            count(&mut summary, &action.op);
        }
        summary.status = Some(outcome(false, plan.actions.is_empty(), kept_copies));
        summary.duration_ms = started.elapsed().as_millis() as u64;
        reporter.summary(&summary)?;
        return Ok(Settled {
            code: summary.status.expect("set").code(),
            summary,
            archive: old,
            touched: Vec::new(),
        });
    }

    // Each run its own backup folder (and a --watch session prunes as it
    // goes); only when something is to be done.
    if !plan.actions.is_empty() {
        a.set_backup(config.backup[0].clone())?;
        b.set_backup(config.backup[1].clone())?;
    }
    let (files, bytes) = plan
        .actions
        .iter()
        .filter_map(|action| match &action.op {
            Op::Copy { src, .. } => Some(src.size),
            _ => None,
        })
        .fold((0, 0), |(n, sum), size| (n + 1, sum + size));
    tally.copying(files, bytes, Instant::now());
    let mut report_err = None;
    let executed = exec::execute(&plan, a, b, config.checksum, tally, |action, status| {
        if *status == Status::Done {
            count(&mut summary, &action.op);
            if matches!(action.op, Op::Copy { .. }) {
                tally.file_copied();
            }
        }
        if let Err(e) = reporter.action(action, Some(status)) {
            report_err.get_or_insert(e);
        }
    });
    summary.skipped = executed.skipped;
    summary.failed = executed.errors;
    let nothing_to_do = plan.actions.is_empty();
    let mut touched = Vec::new();
    for action in &plan.actions {
        touched.push(action.path.clone());
        if let Op::Rename { to, .. } | Op::ConflictRename { to, .. } = &action.op {
            touched.push(to.clone());
        }
    }
    // The steps are done; the archive needs only the final states.
    plan.actions = Vec::new();
    let (next, changed) = planner::next_archive(
        old,
        scan_a,
        scan_b,
        &plan,
        &executed.written,
        &executed.failed,
    );
    crate::log_debug!("executed at {} ms", started.elapsed().as_millis());
    drop((plan, executed.written, executed.failed));
    if changed {
        store.save(&next)?;
    }
    summary.status = Some(outcome(
        executed.aborted.is_some() || executed.skipped + executed.errors > 0,
        nothing_to_do,
        kept_copies,
    ));
    summary.duration_ms = started.elapsed().as_millis() as u64;
    if let Some(err) = executed.aborted {
        summary.reason = Some(format!("{err:#}"));
        let _ = reporter.summary(&summary);
        return Err(err.context("the run stopped; what was done is kept, run again"));
    }
    if let Some(e) = report_err {
        return Err(e);
    }
    if config.json || !(watching && summary.status == Some(Outcome::InSync)) {
        reporter.summary(&summary)?;
    }
    Ok(Settled {
        code: summary.status.expect("set").code(),
        summary,
        archive: Some(next),
        touched,
    })
}

/// How a run ended, for a dry run as for a real one: `incomplete` when a
/// step was skipped, failed or the run stopped.
fn outcome(incomplete: bool, nothing_to_do: bool, kept_copies: bool) -> Outcome {
    if incomplete {
        Outcome::Incomplete
    } else if nothing_to_do {
        Outcome::InSync
    } else if kept_copies {
        Outcome::Conflicts
    } else {
        Outcome::Synced
    }
}

fn join<T>(handle: std::thread::ScopedJoinHandle<'_, anyhow::Result<T>>) -> anyhow::Result<T> {
    handle
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("a scan thread panicked")))
}
