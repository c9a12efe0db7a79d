//! `jepsen-lite check HISTORY.jsonl [--report out.html] [--timeout-secs N]`
//! `jepsen-lite selftest DIR [--timeout-secs N]`
//!
//! Exit codes: 0 ok, 1 violation, 2 unknown or bad input. `selftest` exits 0
//! when every `DIR/good-*.jsonl` passes and every `DIR/bad-*.jsonl` is
//! rejected as its `# expect:` header says, 1 otherwise.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use jepsen_lite::{check, report, CheckOptions, Expectation, History, Outcome};

/// The default search budget, as the etcd robustness suite uses.
const DEFAULT_TIMEOUT_SECS: u64 = 300;

const USAGE: &str = "usage:\n  jepsen-lite check HISTORY.jsonl [--report out.html] [--timeout-secs N]\n  jepsen-lite selftest DIR [--timeout-secs N]\n  jepsen-lite generate SEED,CLIENTS,KEYS,OPS";

struct Args {
    command: String,
    path: PathBuf,
    report: Option<PathBuf>,
    timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut raw = std::env::args().skip(1);
    let command = raw.next().ok_or("missing command")?;
    let mut path = None;
    let mut report = None;
    let mut timeout = Duration::from_secs(DEFAULT_TIMEOUT_SECS);
    while let Some(arg) = raw.next() {
        match arg.as_str() {
            "--report" => report = Some(PathBuf::from(raw.next().ok_or("--report needs a path")?)),
            "--timeout-secs" => {
                let value = raw.next().ok_or("--timeout-secs needs a number")?;
                timeout = Duration::from_secs_f64(
                    value
                        .parse::<f64>()
                        .map_err(|_| format!("bad --timeout-secs {value:?}"))?,
                );
            }
            "-h" | "--help" => return Err(String::new()),
            _ if path.is_none() && !arg.starts_with("--") => path = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    let path = path.ok_or("missing path")?;
    Ok(Args {
        command,
        path,
        report,
        timeout,
    })
}

fn load(path: &Path) -> Result<History, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    History::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn run_check(args: &Args) -> ExitCode {
    let history = match load(&args.path) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match check(
        &history,
        &CheckOptions {
            timeout: Some(args.timeout),
            ..CheckOptions::default()
        },
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}: {e}", args.path.display());
            return ExitCode::from(2);
        }
    };
    println!(
        "{}: {} operations, {} watches",
        args.path.display(),
        history.operations.len(),
        history.watches.len()
    );
    println!("{result}");
    if let (Some(out), true) = (&args.report, result.outcome() != Outcome::Ok) {
        match std::fs::write(out, report::render_html(&history, &result)) {
            Ok(()) => println!("report: {}", out.display()),
            Err(e) => eprintln!("error: writing {}: {e}", out.display()),
        }
    }
    ExitCode::from(result.exit_code() as u8)
}

fn run_selftest(args: &Args) -> ExitCode {
    let entries = match std::fs::read_dir(&args.path) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {}: {e}", args.path.display());
            return ExitCode::from(2);
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let (mut passed, mut failed) = (0, 0);
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let want_ok = name.starts_with("good-");
        if !want_ok && !name.starts_with("bad-") {
            continue;
        }
        let verdict = load(&file).and_then(|history| {
            let expectation = Expectation::from_history(&history)?;
            if !want_ok && expectation == Expectation::default() {
                return Err(
                    "a bad-* history needs an `# expect:` line naming what must fail".into(),
                );
            }
            let result = check(
                &history,
                &CheckOptions {
                    timeout: Some(args.timeout),
                    ..CheckOptions::default()
                },
            )?;
            match (want_ok, result.outcome()) {
                (true, Outcome::Ok) => Ok(format!("ok in {:.3} s", result.elapsed.as_secs_f64())),
                (false, Outcome::Violation) => expectation.check(&result).map(|()| {
                    let first = result
                        .to_string()
                        .lines()
                        .find(|l| l.contains("VIOLATION"))
                        .unwrap_or_default()
                        .to_string();
                    format!("rejected: {first}")
                }),
                (_, outcome) => Err(format!("{outcome:?}:\n{result}")),
            }
        });
        match verdict {
            Ok(message) => {
                passed += 1;
                println!("PASS {name}: {message}");
            }
            Err(message) => {
                failed += 1;
                println!("FAIL {name}: {message}");
            }
        }
    }
    println!("selftest: {passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `generate SEED,CLIENTS,KEYS,OPS`: prints a valid generated history.
fn run_generate(args: &Args) -> ExitCode {
    let spec = args.path.to_string_lossy();
    let numbers: Vec<u64> = spec.split(',').filter_map(|n| n.parse().ok()).collect();
    let [seed, clients, keys, ops] = numbers[..] else {
        eprintln!("error: generate needs SEED,CLIENTS,KEYS,OPS");
        return ExitCode::from(2);
    };
    print!(
        "{}",
        jepsen_lite::generate_history(seed, clients as usize, keys as usize, ops as usize)
            .to_jsonl()
    );
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match args.command.as_str() {
        "check" => run_check(&args),
        "selftest" => run_selftest(&args),
        "generate" => run_generate(&args),
        other => {
            eprintln!("error: unknown command {other:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
