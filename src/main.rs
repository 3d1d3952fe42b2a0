//! The `dtx` binary: parse flags, load settings, run one replica until
//! SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use dtx::dev::DevRedis;
use dtx::{Application, Settings};
use tracing_subscriber::EnvFilter;

// glibc's malloc took about a fifth of dtx's CPU under load (many small
// short-lived allocations across threads); mimalloc halves that.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: dtx [-c FILE] [--dev]

  -c FILE   settings file (TOML, any subset of config/default.toml)
  --dev     start a private redis-server (AOF on, data in ./.dtx-dev/) and use it
  -v        print the version
  -h        this help

Environment variables DTX_<SECTION>_<KEY> override any setting, e.g.
DTX_REDIS_URL=redis://127.0.0.1:6379 DTX_HTTP_PORT=36789.";

struct Args {
    config: Option<PathBuf>,
    dev: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        config: None,
        dev: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" | "--config" => {
                args.config = Some(it.next().ok_or("-c needs a file")?.into());
            }
            "--dev" => args.dev = true,
            "-v" | "--version" => {
                println!("dtx {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Some(args))
}

fn init_logs(settings: &Settings) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("dtx={}", settings.log.level)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if settings.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dtx: {e}");
            return ExitCode::from(2);
        }
    };
    let mut settings = match Settings::load(args.config.as_deref(), |k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dtx: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logs(&settings);
    let spans = match dtx::otel::install(&settings.otel) {
        Ok(spans) => spans,
        Err(e) => {
            eprintln!("dtx: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dev = if args.dev {
        match DevRedis::start(std::path::Path::new(".dtx-dev")).await {
            Ok(d) => {
                settings.redis.url = d.url();
                tracing::info!(url = %d.url(), "--dev: private redis-server started");
                Some(d)
            }
            Err(e) => {
                eprintln!("dtx: --dev: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    tracing::info!(settings = ?settings, "effective settings");
    let code = match Application::build(&settings).await {
        Ok(app) => match app.run_until_stopped(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dtx: server error: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("dtx: {e}");
            ExitCode::FAILURE
        }
    };
    if let Some(d) = dev {
        d.stop().await;
    }
    if let Some(spans) = spans {
        // the last spans go out before the process ends
        let _ = tokio::task::spawn_blocking(move || spans.shutdown()).await;
    }
    code
}
