//! `verify PATH`: check the checksums and framing of a data directory, a
//! log directory, one segment or one snapshot, without loading anything.
//! Exit 0 when valid (a torn tail at the end of the log is a crash artifact
//! and is reported as a note), 1 with a report when not.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ecsdb::storage::snapshot;
use ecsdb::storage::wal::format::{Tail, is_unfinished_header, parse_segment_name, scan};

use super::common::progress;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A data directory, a `wal`/`wal_archive` directory, a `.wal` segment or a `.snap` snapshot.
    pub path: PathBuf,
}

#[derive(Default)]
struct Report {
    problems: Vec<String>,
    notes: Vec<String>,
    checked: usize,
}

/// Returns the snapshot's sequence when it verifies.
fn verify_snapshot(p: &Path, r: &mut Report) -> Option<u64> {
    r.checked += 1;
    match std::fs::read(p) {
        Ok(b) => match snapshot::verify(p, &b) {
            Ok(info) => {
                r.notes.push(format!("{}: snapshot at sequence {}, {} blocks, ok", p.display(), info.seq, info.blocks));
                Some(info.seq)
            }
            Err(e) => {
                r.problems.push(e.to_string());
                None
            }
        },
        Err(e) => {
            r.problems.push(format!("{}: {e}", p.display()));
            None
        }
    }
}

/// Verify segments in order; returns the (first, last) sequence seen. A gap
/// whose missing commits are all at or below `covered` (the newest snapshot
/// that verifies) is a note: recovery never needs those commits, only a
/// rebuild of the whole history does.
fn verify_segments(mut segs: Vec<(u64, PathBuf)>, covered: u64, r: &mut Report) -> Option<(u64, u64)> {
    segs.sort();
    let pb = progress(segs.len() as u64, "verifying segments");
    let mut range: Option<(u64, u64)> = None;
    let n = segs.len();
    for (i, (first, p)) in segs.iter().enumerate() {
        pb.inc(1);
        r.checked += 1;
        let b = match std::fs::read(p) {
            Ok(b) => b,
            Err(e) => {
                r.problems.push(format!("{}: {e}", p.display()));
                continue;
            }
        };
        let s = match scan(&b) {
            Ok(s) => s,
            // The same judgement recovery makes: the newest segment cut
            // short in its header was being created when the process died.
            Err(e) if i + 1 == n && is_unfinished_header(&b) => {
                r.notes.push(format!("{}: unfinished segment header ({e}); recovery removes it", p.display()));
                continue;
            }
            Err(e) => {
                r.problems.push(format!("{}: {e}", p.display()));
                continue;
            }
        };
        if s.header.first_seq != *first {
            r.problems.push(format!(
                "{}: header says first sequence {}, the name says {first}",
                p.display(),
                s.header.first_seq
            ));
        }
        if let Some((_, last)) = range
            && s.header.first_seq > last + 1
            && !s.records.is_empty()
            && s.header.first_seq <= covered + 1
        {
            r.notes.push(format!(
                "{}: the log history has a gap (commits {}..={} are missing); snapshot {covered} covers it, so recovery does not need them, but rebuild-from-wal cannot start before it",
                p.display(),
                last + 1,
                s.header.first_seq - 1
            ));
        } else if let Some((_, last)) = range
            && s.header.first_seq != last + 1
            && !s.records.is_empty()
        {
            r.problems.push(format!(
                "{}: starts at sequence {}, but the previous segment ended at {last} (gap or overlap)",
                p.display(),
                s.header.first_seq
            ));
        }
        if let Some(lastrec) = s.records.last() {
            range = Some((range.map_or(s.header.first_seq, |x| x.0), lastrec.seq));
        }
        if let Tail::Damaged { offset, reason, valid_after, torn, .. } = s.tail {
            if i + 1 == n && torn {
                r.notes.push(format!("{}: torn record at byte {offset} ({reason}); recovery cuts it off", p.display()));
            } else if i + 1 == n && !valid_after {
                r.problems.push(format!(
                    "{} at byte {offset}: {reason} in a complete last record (damage, not a torn write; recovery refuses to open until `ecsdb fsck --repair`)",
                    p.display()
                ));
            } else {
                r.problems.push(format!("{} at byte {offset}: {reason}", p.display()));
            }
        }
    }
    pb.finish_and_clear();
    range
}

fn segments_in(dir: &Path) -> Vec<(u64, PathBuf)> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| {
                let e = e.ok()?;
                let n = e.file_name().into_string().ok()?;
                Some((parse_segment_name(&n)?, e.path()))
            })
            .collect()
        })
        .unwrap_or_default()
}

pub fn run(args: &Args) -> ExitCode {
    let p = &args.path;
    let mut r = Report::default();
    if p.is_dir() {
        if p.join("wal").is_dir() || p.join("snapshots").is_dir() {
            let snaps = std::fs::read_dir(p.join("snapshots"))
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect::<Vec<_>>())
                .unwrap_or_default();
            let mut covered = 0;
            for s in snaps.iter().filter(|s| s.extension().is_some_and(|x| x == "snap")) {
                if let Some(seq) = verify_snapshot(s, &mut r) {
                    covered = covered.max(seq);
                }
            }
            let mut segs = segments_in(&p.join("wal_archive"));
            let live = segments_in(&p.join("wal"));
            segs.retain(|(s, _)| !live.iter().any(|(l, _)| l == s));
            segs.extend(live);
            if let Some((a, b)) = verify_segments(segs, covered, &mut r) {
                r.notes.push(format!("log holds sequences {a}..={b}"));
            }
        } else {
            // A log directory of a data directory (`…/wal_archive/`): the
            // snapshots beside it say which commits recovery still needs.
            let mut covered = 0;
            if let Some(home) = p.parent().filter(|h| h.join("snapshots").is_dir()) {
                let mut quiet = Report::default();
                for (seq, snap) in
                    ecsdb::storage::store::list_snapshots(&ecsdb::storage::fs::OsFs, &home.join("snapshots"))
                        .unwrap_or_default()
                {
                    if verify_snapshot(&snap, &mut quiet).is_some() {
                        covered = seq;
                        break;
                    }
                }
            }
            if let Some((a, b)) = verify_segments(segments_in(p), covered, &mut r) {
                r.notes.push(format!("log holds sequences {a}..={b}"));
            }
            if r.checked == 0 {
                r.problems.push(format!("{}: no segments, snapshots or data directory found", p.display()));
            }
        }
    } else if p.extension().is_some_and(|x| x == "snap") {
        let _ = verify_snapshot(p, &mut r);
    } else if p.extension().is_some_and(|x| x == "wal") {
        let first = p.file_name().and_then(|n| n.to_str()).and_then(parse_segment_name).unwrap_or(0);
        verify_segments(vec![(first, p.clone())], 0, &mut r);
    } else if p.exists() {
        r.problems
            .push(format!("{}: not a data directory, log directory, .wal segment or .snap snapshot", p.display()));
    } else {
        r.problems.push(format!("{}: no such file or directory", p.display()));
    }
    for n in &r.notes {
        out!("{n}");
    }
    if r.problems.is_empty() {
        out!("ok: {} file(s) verified", r.checked);
        ExitCode::SUCCESS
    } else {
        for e in &r.problems {
            err!("problem: {e}");
        }
        err!("{} problem(s) in {} file(s)", r.problems.len(), r.checked);
        ExitCode::from(1)
    }
}
