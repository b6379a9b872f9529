//! `idemkv`: look into, check and compact an idemkv store directory that no
//! process has open. Run `idemkv --help` for the commands and exit codes.

#![deny(clippy::unwrap_used, clippy::expect_used)]

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use idemkv::inspect::{self, Escaped, Hex, UnixMs};
use idemkv::{Error, Options, Record, Store};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::ffi::OsString;
use std::io::{self, Write};
use std::ops::ControlFlow;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Exit statuses, listed in `--help`.
const EXIT_STATUS: &str = "\
exit status:
  0   done
  1   get: the key has no record (never written, expired, released, removed)
  2   damage found: a checksum, a hint file or the format is wrong
  3   the store is open in another process or handle (Locked)
  4   any other error (I/O, permissions)
  5   repair: done, but records that had been fsynced could not be salvaged
  64  bad usage
  66  DIR does not exist or holds no store";

/// Look into an idemkv store directory that no process has open.
#[derive(Debug, Parser)]
#[command(
    name = "idemkv",
    version,
    about = "Look into an idemkv store directory that no process has open.",
    help_template = "{about}\n\nusage: {usage}\n\n{all-args}{after-help}",
    after_help = EXIT_STATUS,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options of the commands that open the store.
#[derive(Debug, clap::Args)]
struct OpenArgs {
    /// The store directory.
    dir: PathBuf,
    /// The retention the store's owner is configured with (default 24h):
    /// how long an abandoned claim stays after its lease. A number with a
    /// unit: 500ms, 90s, 15m, 24h, 7d.
    #[arg(long, value_parser = parse_duration)]
    retention: Option<Duration>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Counters and sizes, after opening the store.
    Stats(OpenArgs),
    /// The record of KEY (its response, if completed).
    Get {
        #[command(flatten)]
        open: OpenArgs,
        /// The key, as bytes (after `--` if it starts with `-`).
        key: OsString,
    },
    /// Every record of every segment in log order, one a line, read from
    /// the files without opening the store.
    Dump {
        /// The store directory.
        dir: PathBuf,
    },
    /// Check every checksum of every segment and hint file.
    Verify {
        /// The store directory.
        dir: PathBuf,
    },
    /// Salvage a store that open refuses as corrupt: copy each damaged
    /// segment to NAME.damaged, rewrite it with every record that checks
    /// out, cut torn tails, print what was lost.
    Repair {
        /// The store directory.
        dir: PathBuf,
    },
    /// Run one compaction pass and print what it did.
    Compact(OpenArgs),
}

impl Command {
    fn dir(&self) -> &Path {
        match self {
            Command::Stats(open) | Command::Compact(open) | Command::Get { open, .. } => &open.dir,
            Command::Dump { dir } | Command::Verify { dir } | Command::Repair { dir } => dir,
        }
    }
}

const EXIT_ABSENT: u8 = 1;
const EXIT_CORRUPT: u8 = 2;
const EXIT_LOCKED: u8 = 3;
const EXIT_ERROR: u8 = 4;
const EXIT_LOST: u8 = 5;
const EXIT_USAGE: u8 = 64;
const EXIT_NO_STORE: u8 = 66;

/// A failed command: what to print on stderr and the exit code.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// The exit code an engine error maps to.
    fn store(dir: &Path, e: &Error) -> Failure {
        let code = match e {
            Error::Locked => EXIT_LOCKED,
            Error::Corrupt { .. } | Error::IncompatibleFormat { .. } => EXIT_CORRUPT,
            _ => EXIT_ERROR,
        };
        Failure {
            code,
            message: format!("{}: {e}", dir.display()),
        }
    }

    fn io(what: &str, e: &io::Error) -> Failure {
        Failure {
            code: EXIT_ERROR,
            message: format!("{what}: {e}"),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => EXIT_USAGE,
            };
            // Help and version go to stdout, usage errors to stderr.
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let command = &cli.command;
    let result = check_dir(command.dir()).and_then(|()| match command {
        Command::Stats(open) => stats(open),
        Command::Get { open, key } => get(open, key.as_bytes()),
        Command::Dump { dir } => dump(dir),
        Command::Verify { dir } => verify(dir),
        Command::Repair { dir } => repair(dir),
        Command::Compact(open) => compact(open),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => report(f),
    }
}

fn report(f: Failure) -> ExitCode {
    // Nothing more can be done if stderr is gone.
    let _ = writeln!(io::stderr().lock(), "idemkv: {}", f.message);
    ExitCode::from(f.code)
}

/// A positive duration with a unit: `500ms`, `90s`, `15m`, `24h`, `7d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("the duration must be positive".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e}: use a number with ms, s, m, h or d")),
    }
}

/// Refuses a directory that is missing or holds no segment file, before
/// anything would create the directory or a lock file in it.
fn check_dir(dir: &Path) -> Result<(), Failure> {
    let no_store = |why: &str| Failure {
        code: EXIT_NO_STORE,
        message: format!("{}: {why}", dir.display()),
    };
    if !dir.exists() {
        return Err(no_store("no such directory"));
    }
    if !dir.is_dir() {
        return Err(no_store("not a directory"));
    }
    match inspect::segment_files(dir) {
        Ok(files) if files.is_empty() => Err(no_store(
            "holds no segment files (NNNNNNNNNN.seg), so no idemkv store",
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(Failure::store(dir, &e)),
    }
}

/// Opens the store for a look: no background compaction, keys as long as
/// the format allows.
fn open(args: &OpenArgs) -> Result<Store, Failure> {
    let mut options = Options::new()
        .background_compaction(false)
        .max_key_len(usize::from(u16::MAX));
    if let Some(retention) = args.retention {
        options = options.retention(retention);
    }
    options
        .open(&args.dir)
        .map_err(|e| Failure::store(&args.dir, &e))
}

fn stats(args: &OpenArgs) -> Result<(), Failure> {
    let store = open(args)?;
    let stats = store.stats();
    let files = inspect::segment_files(&args.dir).map_err(|e| Failure::store(&args.dir, &e))?;
    drop(store);
    let mut text = aligned(&format!("{stats:#?}"));
    let seg_bytes: u64 = files.iter().map(|f| f.bytes).sum();
    let hints: Vec<u64> = files.iter().filter_map(|f| f.hint_bytes).collect();
    text.push_str(&format!(
        "\nfiles: {} segment files ({}), {} hint files ({}), newest {}\n",
        files.len(),
        human(seg_bytes),
        hints.len(),
        human(hints.iter().sum()),
        files
            .last()
            .and_then(|f| f.path.file_name())
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
    ));
    write_stdout(&text)
}

fn get(args: &OpenArgs, key: &[u8]) -> Result<(), Failure> {
    let store = open(args)?;
    let record = store.get(key).map_err(|e| Failure::store(&args.dir, &e))?;
    drop(store);
    let Some(record) = record else {
        return Err(Failure {
            code: EXIT_ABSENT,
            message: format!(
                "no record for key \"{}\" (never written, expired, released or removed)",
                Escaped(key)
            ),
        });
    };
    let time = |ms: u64| format!("{} ({ms})", UnixMs(ms));
    let mut fields = vec![("key", format!("\"{}\"", Escaped(key)))];
    let mut body = None;
    match record {
        Record::Completed(done) => {
            fields.push(("state", "completed".into()));
            fields.push(("fingerprint", Hex(done.fingerprint()).to_string()));
            fields.push(("completed", time(done.completed_at_ms())));
            fields.push(("expires", time(done.expires_at_ms())));
            let response = done.into_response();
            let form = if std::str::from_utf8(&response).is_ok() {
                "UTF-8"
            } else {
                "not UTF-8, in hex"
            };
            fields.push(("response", format!("{} bytes, {form}:", response.len())));
            body = Some(response);
        }
        Record::InProgress {
            fingerprint,
            claimed_at_ms,
            lease_expires_at_ms,
        } => {
            fields.push(("state", "in progress".into()));
            fields.push(("fingerprint", Hex(fingerprint).to_string()));
            fields.push(("claimed", time(claimed_at_ms)));
            fields.push(("lease until", time(lease_expires_at_ms)));
        }
        Record::Seen {
            seen_at_ms,
            expires_at_ms,
        } => {
            fields.push(("state", "seen".into()));
            fields.push(("seen", time(seen_at_ms)));
            fields.push(("expires", time(expires_at_ms)));
        }
    }
    let width = fields.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut text: String = fields
        .iter()
        .map(|(name, value)| format!("{name:<width$}  {value}\n"))
        .collect();
    if let Some(body) = body {
        match String::from_utf8(body) {
            Ok(s) => {
                text.push_str(&s);
                if !s.ends_with('\n') {
                    text.push('\n');
                }
            }
            Err(e) => {
                for chunk in e.as_bytes().chunks(32) {
                    let line: String = chunk.iter().map(|b| format!("{b:02x}")).collect();
                    text.push_str(&line);
                    text.push('\n');
                }
            }
        }
    }
    write_stdout(&text)
}

fn dump(dir: &Path) -> Result<(), Failure> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut write_error = None;
    let walked = inspect::dump(dir, |rec| match writeln!(out, "{rec}") {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => {
            write_error = Some(e);
            ControlFlow::Break(())
        }
    });
    let flushed = out.flush();
    match write_error.map_or(flushed, Err) {
        // The reader went away (`idemkv dump DIR | head`): not a failure.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        Err(e) => return Err(Failure::io("writing to stdout", &e)),
        Ok(()) => {}
    }
    let report = walked.map_err(|e| Failure::store(dir, &e))?;
    let mut err = io::stderr().lock();
    let _ = writeln!(
        err,
        "{} records in {} segment files ({})",
        report.records,
        report.segments,
        human(report.bytes)
    );
    if report.torn_tail_bytes > 0 {
        let _ = writeln!(err, "{}", torn_tail(report.torn_tail_bytes));
    }
    Ok(())
}

fn torn_tail(bytes: u64) -> String {
    format!(
        "a stream's newest segment ends in a torn tail of {bytes} bytes (writes that were never \
         fsynced, cut short or partly lost by a crash; not damage); the next open cuts it off"
    )
}

fn repair(dir: &Path) -> Result<(), Failure> {
    let report = idemkv::repair(dir).map_err(|e| Failure::store(dir, &e))?;
    let mut text = format!(
        "checked {} segment files, kept {} records\n",
        report.segments, report.records_kept
    );
    if report.torn_tail_bytes > 0 {
        text.push_str(&format!(
            "cut {} bytes of torn tail (never fsynced, so never acknowledged)\n",
            report.torn_tail_bytes
        ));
    }
    for f in &report.repaired {
        let ranges: Vec<String> = f
            .skipped
            .iter()
            .map(|r| format!("{}..{}", r.start, r.end))
            .collect();
        text.push_str(&format!(
            "repaired {}: kept {} records, lost {}, skipped bytes {}{}; the damaged file is \
             kept as {}\n",
            f.file.display(),
            f.records_kept,
            f.records_skipped,
            ranges.join(", "),
            if f.header_rewritten {
                " (segment header written anew)"
            } else {
                ""
            },
            f.backup.display()
        ));
    }
    if report.repaired.is_empty() && report.torn_tail_bytes == 0 {
        text.push_str("no damage found; nothing changed\n");
    }
    write_stdout(&text)?;
    if report.salvaged_everything() {
        return Ok(());
    }
    Err(Failure {
        code: EXIT_LOST,
        message: format!(
            "{} records that had been fsynced were damaged and are lost: their keys show an \
             earlier state or none. The store opens again; keep the .damaged copies until the \
             cause (disk, file system, another process) is understood",
            report.records_skipped()
        ),
    })
}

fn verify(dir: &Path) -> Result<(), Failure> {
    let bar = progress_bar();
    let result = inspect::verify(dir, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let report = result.map_err(|e| Failure::store(dir, &e))?;
    let mut text = format!(
        "checked {} segment files ({}), {} records, {} hint files",
        report.segments,
        human(report.bytes),
        report.records,
        report.hints + report.damaged_hints.len() as u64,
    );
    if report.torn_tail_bytes > 0 {
        text.push_str(&format!("\nnote: {}", torn_tail(report.torn_tail_bytes)));
    }
    text.push('\n');
    write_stdout(&text)?;
    if report.damaged_hints.is_empty() {
        return Ok(());
    }
    let message = report
        .damaged_hints
        .iter()
        .map(|h| {
            format!(
                "damaged hint file {} at byte {}: {}",
                h.file.display(),
                h.offset,
                h.reason
            )
        })
        .collect::<Vec<_>>()
        .join("\nidemkv: ");
    Err(Failure {
        code: EXIT_CORRUPT,
        message: format!(
            "{message}\nidemkv: no record is at risk: open ignores a damaged hint, reads its \
             segment instead and writes the hint again"
        ),
    })
}

fn compact(args: &OpenArgs) -> Result<(), Failure> {
    let store = open(args)?;
    let before = store.stats();
    let report = store.compact().map_err(|e| Failure::store(&args.dir, &e))?;
    let after = store.stats();
    drop(store);
    let text = format!(
        "{}\nsegments       {} -> {}\nbytes_on_disk  {} -> {}\n",
        aligned(&format!("{report:#?}")),
        before.segments,
        after.segments,
        human(before.bytes_on_disk),
        human(after.bytes_on_disk),
    );
    write_stdout(&text)
}

fn write_stdout(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(Failure::io("writing to stdout", &e))
        }
        _ => Ok(()),
    }
}

/// A struct's `{:#?}` as `name  value` lines, names padded to one column,
/// so every field shows, including fields added after this was written.
/// Byte counts get a readable size beside them.
fn aligned(debug: &str) -> String {
    let mut lines = debug.lines();
    lines.next(); // `Name {`
    let body: Vec<&str> = lines.filter(|l| *l != "}").collect();
    let field = |line: &str| -> Option<(String, String)> {
        let rest = line.strip_prefix("    ").filter(|r| !r.starts_with(' '))?;
        let (name, value) = rest.split_once(": ")?;
        Some((name.to_string(), value.trim_end_matches(',').to_string()))
    };
    let width = body
        .iter()
        .filter_map(|l| field(l))
        .map(|(name, _)| name.len())
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for line in body {
        match field(line) {
            Some((name, value)) => {
                text.push_str(&format!("{name:<width$}  {value}"));
                if name.contains("bytes")
                    && let Ok(n) = value.parse::<u64>()
                    && n >= 1024
                {
                    text.push_str(&format!("  ({})", human(n)));
                }
            }
            // Inside a field that spans lines; at its end, the field's comma.
            None => {
                let inner = line.strip_prefix("    ").unwrap_or(line);
                let closes_field = !inner.starts_with(' ');
                text.push_str(if closes_field {
                    inner.trim_end_matches(',')
                } else {
                    inner
                });
            }
        }
        text.push('\n');
    }
    text
}

/// `512 B`, `4.0 KiB`, `1.5 MiB`, `2.0 GiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A progress bar for `verify` on stderr; indicatif draws it only on a
/// terminal, at most ten times a second.
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(10));
    if let Ok(style) = ProgressStyle::with_template(
        "verifying [{bar:30}] {percent:>3}%  {binary_bytes} of {binary_total_bytes}  {eta}",
    ) {
        bar.set_style(style.progress_chars("#>."));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(list: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("idemkv").chain(list.iter().copied()))
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("7d").ok(),
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(
            parse_duration("250ms").ok(),
            Some(Duration::from_millis(250))
        );
        // humantime takes fractions too.
        assert_eq!(parse_duration("1.5h").ok(), Some(Duration::from_secs(5400)));
        for bad in ["", "h", "10", "10x", "0s", "-5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn arguments_parse_or_explain() {
        let Ok(Cli {
            command: Command::Get { open, key },
        }) = parse(&["get", "--retention", "1h", "/d", "--", "-k"])
        else {
            panic!("a key after -- is a key");
        };
        assert_eq!(key, "-k");
        assert_eq!(open.retention, Some(Duration::from_secs(3600)));
        assert_eq!(
            parse(&["--help"]).map(drop).unwrap_err().kind(),
            ErrorKind::DisplayHelp
        );
        for bad in [
            &[][..],
            &["stats"],
            &["get", "/d"],
            &["frobnicate", "/d"],
            &["stats", "/d", "extra"],
            &["dump", "--retention", "1h", "/d"],
            &["stats", "--bogus", "/d"],
            &["repair"],
        ] {
            match parse(bad) {
                Err(e) => assert!(
                    !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion),
                    "{bad:?}"
                ),
                Ok(cli) => panic!("{bad:?} parsed as {cli:?}"),
            }
        }
    }

    #[test]
    fn debug_output_aligns_every_field() {
        let debug =
            "S {\n    a: 1,\n    long_name_bytes: 2048,\n    list: [\n        7,\n    ],\n}";
        assert_eq!(
            aligned(debug),
            "a                1\nlong_name_bytes  2048  (2.0 KiB)\nlist             [\n    7,\n]\n"
        );
        // What `{:#?}` of a struct looks like, as `aligned` expects.
        #[derive(Debug)]
        #[allow(dead_code, reason = "read only through Debug")]
        struct S {
            a: u64,
            long_name_bytes: u64,
            list: Vec<u8>,
        }
        let s = S {
            a: 1,
            long_name_bytes: 2048,
            list: vec![7],
        };
        assert_eq!(format!("{s:#?}"), debug);
    }
}
