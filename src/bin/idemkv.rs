//! `idemkv`: look into, check and compact an idemkv store directory that no
//! process has open. Run `idemkv --help` for the commands and exit codes.

use idemkv::inspect::{self, Escaped, Hex, UnixMs};
use idemkv::{Error, Options, Record, Store};
use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::ops::ControlFlow;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: idemkv <command> [options] DIR [KEY]

Look into an idemkv store directory that no process has open.

commands:
  stats DIR        counters and sizes, after opening the store
  get DIR KEY      the record of KEY (its response, if completed)
  dump DIR         every record of every segment in log order, one a line,
                   read from the files without opening the store
  verify DIR       check every checksum of every segment and hint file
  repair DIR       salvage a store that open refuses as corrupt: copy each
                   damaged segment to NAME.damaged, rewrite it with every
                   record that checks out, cut torn tails, print what was lost
  compact DIR      run one compaction pass and print what it did

options:
  --retention DURATION   the retention the store's owner is configured with
                         (default 24h): how long an abandoned claim stays
                         after its lease. For stats, get and compact.
                         DURATION is a number with ms, s, m, h or d.
  -h, --help             this text
  -V, --version          the version

exit status:
  0   done
  1   get: the key has no record (never written, expired, released, removed)
  2   damage found: a checksum, a hint file or the format is wrong
  3   the store is open in another process or handle (Locked)
  4   any other error (I/O, permissions)
  5   repair: done, but records that had been fsynced could not be salvaged
  64  bad usage
  66  DIR does not exist or holds no store
";

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
    fn usage(why: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_USAGE,
            message: format!("{}\n\n{USAGE}", why.into()),
        }
    }

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

enum Command {
    Stats,
    Get(Vec<u8>),
    Dump,
    Verify,
    Repair,
    Compact,
}

struct Args {
    command: Command,
    dir: PathBuf,
    retention: Option<Duration>,
}

enum Parsed {
    Run(Args),
    Help,
    Version,
}

fn main() -> ExitCode {
    let parsed = match parse(std::env::args_os().skip(1).collect()) {
        Ok(p) => p,
        Err(f) => return report(f),
    };
    let args = match parsed {
        Parsed::Help => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Parsed::Version => {
            println!("idemkv {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Parsed::Run(args) => args,
    };
    let result = check_dir(&args.dir).and_then(|()| match &args.command {
        Command::Stats => stats(&args),
        Command::Get(key) => get(&args, key),
        Command::Dump => dump(&args.dir),
        Command::Verify => verify(&args.dir),
        Command::Repair => repair(&args.dir),
        Command::Compact => compact(&args),
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

fn parse(argv: Vec<OsString>) -> Result<Parsed, Failure> {
    let mut positional = Vec::new();
    let mut retention = None;
    let mut options_done = false;
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        let Some(text) = arg.to_str().filter(|_| !options_done) else {
            positional.push(arg);
            continue;
        };
        match text {
            "-h" | "--help" | "help" if positional.is_empty() => return Ok(Parsed::Help),
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "--" => options_done = true,
            "--retention" => {
                let value = it
                    .next()
                    .ok_or_else(|| Failure::usage("--retention needs a value"))?;
                retention = Some(parse_duration(&value.to_string_lossy())?);
            }
            _ if text.starts_with("--retention=") => {
                retention = Some(parse_duration(&text["--retention=".len()..])?);
            }
            _ if text.starts_with('-') && text.len() > 1 => {
                return Err(Failure::usage(format!("unknown option {text}")));
            }
            _ => positional.push(arg),
        }
    }
    let mut positional = positional.into_iter();
    let Some(name) = positional.next() else {
        return Err(Failure::usage("no command given"));
    };
    let name = name.to_string_lossy().into_owned();
    let dir = positional
        .next()
        .map(PathBuf::from)
        .ok_or_else(|| Failure::usage(format!("{name} needs a store directory")))?;
    let command = match name.as_str() {
        "stats" => Command::Stats,
        "get" => {
            let key = positional
                .next()
                .ok_or_else(|| Failure::usage("get needs a key"))?;
            Command::Get(key.as_bytes().to_vec())
        }
        "dump" => Command::Dump,
        "verify" => Command::Verify,
        "repair" => Command::Repair,
        "compact" => Command::Compact,
        other => return Err(Failure::usage(format!("unknown command {other:?}"))),
    };
    if let Some(extra) = positional.next() {
        return Err(Failure::usage(format!(
            "unexpected argument {:?} after the {name} command's arguments",
            extra.to_string_lossy()
        )));
    }
    if retention.is_some() && matches!(command, Command::Dump | Command::Verify | Command::Repair) {
        return Err(Failure::usage(format!("{name} takes no --retention")));
    }
    Ok(Parsed::Run(Args {
        command,
        dir,
        retention,
    }))
}

/// `90s`, `15m`, `24h`, `7d`, `500ms`.
fn parse_duration(text: &str) -> Result<Duration, Failure> {
    let bad = || {
        Failure::usage(format!(
            "bad duration {text:?}: use a number with ms, s, m, h or d"
        ))
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let ms = n.checked_mul(ms_per).filter(|&ms| ms > 0).ok_or_else(bad)?;
    Ok(Duration::from_millis(ms))
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
fn open(args: &Args) -> Result<Store, Failure> {
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

fn stats(args: &Args) -> Result<(), Failure> {
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

fn get(args: &Args, key: &[u8]) -> Result<(), Failure> {
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
    let mut bar = ProgressBar::new(io::stderr().is_terminal());
    let result = inspect::verify(dir, |done, total| bar.update(done, total));
    bar.clear();
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

fn compact(args: &Args) -> Result<(), Failure> {
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

/// A progress bar on stderr, drawn only on a terminal and only once a check
/// has run long enough to be worth watching.
struct ProgressBar {
    enabled: bool,
    start: Instant,
    last_draw: Option<Instant>,
}

impl ProgressBar {
    const DELAY: Duration = Duration::from_millis(300);
    const EVERY: Duration = Duration::from_millis(100);
    const WIDTH: usize = 30;

    fn new(enabled: bool) -> ProgressBar {
        ProgressBar {
            enabled,
            start: Instant::now(),
            last_draw: None,
        }
    }

    fn update(&mut self, done: u64, total: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.start) < Self::DELAY
            || self
                .last_draw
                .is_some_and(|at| now.duration_since(at) < Self::EVERY)
        {
            return;
        }
        self.last_draw = Some(now);
        let fraction = if total == 0 {
            1.0
        } else {
            (done as f64 / total as f64).min(1.0)
        };
        let filled = (fraction * Self::WIDTH as f64) as usize;
        let _ = write!(
            io::stderr().lock(),
            "\rverifying [{}{}] {:>3.0}%  {} of {}  ",
            "#".repeat(filled),
            ".".repeat(Self::WIDTH - filled),
            fraction * 100.0,
            human(done),
            human(total)
        );
    }

    fn clear(&mut self) {
        if self.last_draw.take().is_some() {
            let _ = write!(io::stderr().lock(), "\r{:80}\r", "");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
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
        for bad in ["", "h", "10", "10x", "0s", "-5s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn arguments_parse_or_explain() {
        let Ok(Parsed::Run(a)) = parse(args(&["get", "--retention", "1h", "/d", "--", "-k"]))
        else {
            panic!("a key after -- is a key");
        };
        assert!(matches!(a.command, Command::Get(ref k) if k == b"-k"));
        assert_eq!(a.retention, Some(Duration::from_secs(3600)));
        assert!(matches!(parse(args(&["--help"])), Ok(Parsed::Help)));
        for bad in [
            &[][..],
            &["stats"],
            &["get", "/d"],
            &["frobnicate", "/d"],
            &["stats", "/d", "extra"],
            &["dump", "--retention", "1h", "/d"],
            &["stats", "--bogus", "/d"],
        ] {
            match parse(args(bad)) {
                Err(f) => assert_eq!(f.code, EXIT_USAGE, "{bad:?}"),
                Ok(_) => panic!("{bad:?} parsed"),
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
