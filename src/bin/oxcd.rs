//! `oxcd`: the server binary. Flags follow etcd's (`oxcd --help`); see the README.

use clap::Parser;
use oxcd::server::Config;

fn main() -> std::process::ExitCode {
    let config = Config::parse();
    if let Err(error) = init_logging(&config) {
        eprintln!("oxcd: {error}");
        return std::process::ExitCode::from(2);
    }
    if let Err(error) = config.validate() {
        tracing::error!(%error, "invalid configuration");
        return std::process::ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("oxcd")
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "failed to start the runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(oxcd::server::run(config, shutdown_signal())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "oxcd stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs to every output of `--log-outputs`, in the `--log-format`, at `--log-level` (or as
/// `OXCD_LOG` filters). Colors only when the one output is a terminal, so files and pipes
/// get plain text.
fn init_logging(config: &Config) -> Result<(), String> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("OXCD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    let outputs = LogOutputs::open(&config.log_outputs)?;
    let ansi = match outputs.0.as_slice() {
        [LogOutput::Stderr] => std::io::stderr().is_terminal(),
        [LogOutput::Stdout] => std::io::stdout().is_terminal(),
        _ => false,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(outputs)
        .with_ansi(ansi);
    if config.log_format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    Ok(())
}

enum LogOutput {
    Stderr,
    Stdout,
    File(std::sync::Arc<std::fs::File>),
}

/// The outputs of `--log-outputs`; every event is written to each.
struct LogOutputs(Vec<LogOutput>);

impl LogOutputs {
    fn open(list: &str) -> Result<LogOutputs, String> {
        let mut outputs = Vec::new();
        for name in list
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            outputs.push(match name {
                "default" | "stderr" => LogOutput::Stderr,
                "stdout" => LogOutput::Stdout,
                path => {
                    let file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|error| format!("--log-outputs: cannot open {path:?}: {error}"))?;
                    LogOutput::File(std::sync::Arc::new(file))
                }
            });
        }
        if outputs.is_empty() {
            outputs.push(LogOutput::Stderr);
        }
        Ok(LogOutputs(outputs))
    }
}

/// One event's line, written whole to every output when dropped.
struct LogLine<'a> {
    outputs: &'a [LogOutput],
    line: Vec<u8>,
}

impl std::io::Write for LogLine<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine<'_> {
    fn drop(&mut self) {
        use std::io::Write as _;
        for output in self.outputs {
            // A log line that cannot be written has nowhere else to go.
            let _ = match output {
                LogOutput::Stderr => std::io::stderr().lock().write_all(&self.line),
                LogOutput::Stdout => std::io::stdout().lock().write_all(&self.line),
                LogOutput::File(file) => (&**file).write_all(&self.line),
            };
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogOutputs {
    type Writer = LogLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LogLine {
            outputs: &self.0,
            line: Vec::with_capacity(256),
        }
    }
}

/// Completes on SIGTERM or Ctrl-C (SIGINT), so that the member can stop cleanly: finish the
/// requests in flight, commit the backend, close the WAL.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        biased;
        _ = ctrl_c => tracing::info!("received Ctrl-C, stopping"),
        _ = terminate => tracing::info!("received SIGTERM, stopping"),
    }
}
