//! The `playpanel` command: serve the panel API, run workers, run the sandbox, manage keys.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use url::Url;

use playpanel::admin::AdminToken;
use playpanel::app::{Playpanel, Settings};
use playpanel::domain::{Catalogue, Money};
use playpanel::sandbox::{Sandbox, SandboxConfig};
use playpanel::store;

#[derive(Parser)]
#[command(
    name = "playpanel",
    version,
    about = "Panel-API orders for TikTok views, verified by play count"
)]
struct Cli {
    /// Log format on standard error.
    #[arg(
        long,
        global = true,
        env = "PLAYPANEL_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the panel API (and run a worker unless --no-worker).
    Serve(ServeArgs),
    /// Run a worker without the API.
    Worker(RunArgs),
    /// Serve the local stand-in for TikTok and an upstream panel.
    Sandbox(SandboxArgs),
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Change a key's balance.
    Balance {
        #[command(subcommand)]
        command: BalanceCommand,
    },
    /// Show orders.
    Orders {
        #[command(subcommand)]
        command: OrdersCommand,
    },
    /// Check a catalogue file and print the services as clients will see them.
    Services {
        /// The catalogue (TOML); the built-in one without it.
        #[arg(long, env = "PLAYPANEL_CATALOGUE")]
        catalogue: Option<PathBuf>,
    },
    /// Bring the database schema up to date and exit.
    Migrate {
        #[arg(
            long,
            env = "PLAYPANEL_DATABASE",
            default_value = "sqlite://playpanel.db"
        )]
        database: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key with an opening balance; the key is printed alone on the last line.
    Create {
        #[arg(
            long,
            env = "PLAYPANEL_DATABASE",
            default_value = "sqlite://playpanel.db"
        )]
        database: String,
        /// Opening balance, e.g. 100 or 12.50.
        #[arg(long, default_value = "0")]
        balance: String,
    },
    /// List keys with their balances and order counts (keys themselves are never stored).
    List {
        #[arg(
            long,
            env = "PLAYPANEL_DATABASE",
            default_value = "sqlite://playpanel.db"
        )]
        database: String,
    },
    /// Revoke a key: its calls answer "Invalid API key" from then on.
    Revoke {
        key: String,
        #[arg(
            long,
            env = "PLAYPANEL_DATABASE",
            default_value = "sqlite://playpanel.db"
        )]
        database: String,
    },
}

#[derive(Subcommand)]
enum BalanceCommand {
    /// Add money to a key (a negative amount takes it away), recorded in the ledger.
    Add {
        key: String,
        #[arg(allow_hyphen_values = true)]
        amount: String,
        /// Why, for the ledger.
        #[arg(long)]
        note: Option<String>,
        #[arg(
            long,
            env = "PLAYPANEL_DATABASE",
            default_value = "sqlite://playpanel.db"
        )]
        database: String,
    },
}

#[derive(Subcommand)]
enum OrdersCommand {
    /// An order with every status change (time and cause) and its charges and refunds.
    Show {
        id: String,
        #[arg(
            long,
            env = "PLAYPANEL_DATABASE",
            default_value = "sqlite://playpanel.db"
        )]
        database: String,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to serve the panel API on.
    #[arg(long, env = "PLAYPANEL_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve the API only; orders are worked on by `playpanel worker` processes.
    #[arg(long, env = "PLAYPANEL_NO_WORKER", value_parser = BoolishValueParser::new())]
    no_worker: bool,
    /// Serve the operator dashboard at /admin to whoever gives this token (at least 16
    /// characters); without it, /admin does not exist.
    #[arg(long, env = "PLAYPANEL_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct RunArgs {
    /// Database URL: sqlite://PATH (created if missing).
    #[arg(
        long,
        env = "PLAYPANEL_DATABASE",
        default_value = "sqlite://playpanel.db"
    )]
    database: String,
    /// Run a sandbox in this process and use it for TikTok and the upstream panel.
    #[arg(
        long,
        env = "PLAYPANEL_SANDBOX",
        conflicts_with = "sandbox_url",
        value_parser = BoolishValueParser::new()
    )]
    sandbox: bool,
    /// Use a sandbox started separately (`playpanel sandbox`) at this URL.
    #[arg(long, env = "PLAYPANEL_SANDBOX_URL")]
    sandbox_url: Option<Url>,
    /// The upstream panel's API URL (not needed with a sandbox).
    #[arg(long, env = "PLAYPANEL_UPSTREAM_URL")]
    upstream_url: Option<String>,
    /// The API key at the upstream panel.
    #[arg(long, env = "PLAYPANEL_UPSTREAM_KEY", hide_env_values = true)]
    upstream_key: Option<String>,
    /// Service catalogue (TOML); the built-in one has services 1 and 2.
    #[arg(long, env = "PLAYPANEL_CATALOGUE")]
    catalogue: Option<PathBuf>,
    /// TikTok page requests per second, across all videos.
    #[arg(long, env = "PLAYPANEL_TIKTOK_RATE")]
    tiktok_rate: Option<u32>,
    /// Seconds a play count read for one `add` may serve the next ones for the same video.
    #[arg(long, env = "PLAYPANEL_COUNT_TTL")]
    count_ttl: Option<f64>,
    /// Seconds all page reads pause after TikTok refuses one (doubling while refusals go on).
    #[arg(long, env = "PLAYPANEL_BREAKER")]
    breaker: Option<f64>,
    /// User-Agent sent with TikTok page requests.
    #[arg(long, env = "PLAYPANEL_USER_AGENT")]
    user_agent: Option<String>,
    /// Seconds over which a short delivery is re-checked before it is judged Partial.
    #[arg(long, env = "PLAYPANEL_VERIFY_GRACE")]
    verify_grace: Option<f64>,
    /// Play-count checks within the grace period.
    #[arg(long, env = "PLAYPANEL_VERIFY_CHECKS")]
    verify_checks: Option<u32>,
    /// Seconds between questions to the provider about an order's progress.
    #[arg(long, env = "PLAYPANEL_PROGRESS_INTERVAL")]
    progress_interval: Option<f64>,
    /// Seconds an order whose placement is in doubt is judged by its play count alone.
    #[arg(long, env = "PLAYPANEL_WATCH_WINDOW")]
    watch_window: Option<f64>,
    /// Seconds a worker's claim on an order lasts.
    #[arg(long, env = "PLAYPANEL_LEASE")]
    lease: Option<f64>,
    /// Calls per second one key may make to each API process, with twice that in a burst
    /// (0: no limit).
    #[arg(long, env = "PLAYPANEL_KEY_RATE", default_value_t = 50)]
    key_rate: u32,
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given).
    #[arg(long, env = "PLAYPANEL_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Days after an order ends during which it may be refilled.
    #[arg(long, env = "PLAYPANEL_REFILL_DAYS", default_value_t = 30.0)]
    refill_days: f64,
    /// Seconds a status answer may be reused by this process (0: always read afresh). Clients
    /// poll the same orders over and over; two seconds spares the database most of it.
    #[arg(long, env = "PLAYPANEL_STATUS_CACHE", default_value_t = 2.0)]
    status_cache: f64,
    /// Seconds this process's worker may go without claiming orders before /readyz reports
    /// the process unavailable (its worker is stuck or cannot reach the database).
    #[arg(long, env = "PLAYPANEL_READY_MAX_WAIT", default_value_t = 120.0)]
    ready_max_wait: f64,
    /// What to do with an order for a video that already has an open order: queue it behind
    /// that one (its start count is read when its turn comes) or refuse it.
    #[arg(
        long,
        env = "PLAYPANEL_SAME_VIDEO",
        value_enum,
        default_value = "queue"
    )]
    same_video: SameVideo,
    /// The upstream panel refuses a second order for a link it is delivering to; lets a
    /// placement whose answer was lost be settled by asking again (always on with a sandbox).
    #[arg(
        long,
        env = "PLAYPANEL_PROVIDER_REFUSES_DUPLICATES",
        value_parser = BoolishValueParser::new()
    )]
    provider_refuses_duplicates: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SameVideo {
    Queue,
    Refuse,
}

#[derive(Args)]
struct SandboxArgs {
    #[arg(
        long,
        env = "PLAYPANEL_SANDBOX_LISTEN",
        default_value = "127.0.0.1:8090"
    )]
    listen: SocketAddr,
    /// Views the sandbox's upstream delivers per second per order (0: at once).
    #[arg(long, env = "PLAYPANEL_SANDBOX_SPEED", default_value_t = 500)]
    views_per_second: u64,
    /// Milliseconds each video page takes to answer.
    #[arg(long, env = "PLAYPANEL_SANDBOX_PAGE_DELAY_MS", default_value_t = 0)]
    page_delay_ms: u64,
}

/// A duration given in seconds, between zero and a year.
fn seconds(value: Option<f64>, default: Duration) -> anyhow::Result<Duration> {
    const YEAR: f64 = 365.0 * 86_400.0;
    match value {
        None => Ok(default),
        Some(s) if s > YEAR => bail!("{s} seconds is more than a year"),
        Some(s) => Duration::try_from_secs_f64(s).with_context(|| format!("bad duration {s}")),
    }
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Errors are told in one line with their causes, not as a backtrace.
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let cancel = CancellationToken::new();
    tokio::spawn(stop_on_signal(cancel.clone()));

    match cli.command {
        Command::Serve(args) => serve(args, cancel).await,
        Command::Worker(args) => {
            let (playpanel, _sandbox) = assemble(&args, None, &cancel).await?;
            playpanel.worker.run(cancel).await;
            Ok(())
        }
        Command::Sandbox(args) => {
            let listener = TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            say!("sandbox listening on http://{}", listener.local_addr()?);
            let config = SandboxConfig {
                views_per_second: args.views_per_second,
                page_delay: Duration::from_millis(args.page_delay_ms),
            };
            Sandbox::new(config).serve(listener, cancel).await?;
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Create { database, balance },
        } => {
            let balance = Money::from_str(&balance).map_err(anyhow::Error::msg)?;
            if balance.is_negative() {
                bail!("the balance cannot be negative");
            }
            let store = store::open(&database).await?;
            let key = playpanel::keys::create(store.as_ref(), balance).await?;
            println!("created an API key with balance {balance} USD:");
            println!("{key}");
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::List { database },
        } => {
            let store = store::open_existing(&database).await?;
            print!("{}", playpanel::operator::list_keys(store.as_ref()).await?);
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Revoke { key, database },
        } => {
            let store = store::open_existing(&database).await?;
            print!(
                "{}",
                playpanel::operator::revoke_key(store.as_ref(), &key).await?
            );
            Ok(())
        }
        Command::Balance {
            command:
                BalanceCommand::Add {
                    key,
                    amount,
                    note,
                    database,
                },
        } => {
            let store = store::open_existing(&database).await?;
            let out =
                playpanel::operator::add_balance(store.as_ref(), &key, &amount, note.as_deref());
            print!("{}", out.await?);
            Ok(())
        }
        Command::Orders {
            command: OrdersCommand::Show { id, database },
        } => {
            let store = store::open_existing(&database).await?;
            print!(
                "{}",
                playpanel::operator::show_order(store.as_ref(), &id).await?
            );
            Ok(())
        }
        Command::Services { catalogue } => {
            let catalogue = match catalogue {
                Some(path) => Catalogue::from_toml_file(&path).map_err(anyhow::Error::msg)?,
                None => Catalogue::sandbox_default(),
            };
            print!("{}", playpanel::operator::services(&catalogue));
            Ok(())
        }
        Command::Migrate { database } => {
            store::open(&database).await?;
            println!("the database schema is up to date (created or migrated as needed)");
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let admin_token = args
        .admin_token
        .as_deref()
        .map(AdminToken::new)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let dashboard = admin_token.is_some();
    let (playpanel, sandbox) = assemble(&args.run, admin_token, &cancel).await?;

    if sandbox.is_some() && playpanel.store.key_count().await? == 0 {
        let key =
            playpanel::keys::create(playpanel.store.as_ref(), Money::from_units(100 * 100_000))
                .await?;
        say!("demo API key (balance 100.00000 USD): {key}");
    }

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    say!(
        "playpanel listening on http://{}/api/v2",
        listener.local_addr()?
    );
    if dashboard {
        say!(
            "operator dashboard at http://{}/admin",
            listener.local_addr()?
        );
    }

    let worker =
        (!args.no_worker).then(|| tokio::spawn(playpanel.worker.clone().run(cancel.clone())));
    let drain = Duration::from_secs(20);
    playpanel::api::serve(listener, playpanel.router(), cancel.clone(), drain).await;

    if let Some(worker) = worker {
        // The worker finishes the step it is in; past the deadline the leases simply expire and
        // another worker takes the orders over.
        if tokio::time::timeout(Duration::from_secs(30), worker)
            .await
            .is_err()
        {
            warn!("worker did not stop within 30 s; its leases will expire");
        }
    }
    Ok(())
}

/// Builds playpanel from the command line, starting an in-process sandbox if asked.
async fn assemble(
    args: &RunArgs,
    admin_token: Option<AdminToken>,
    cancel: &CancellationToken,
) -> anyhow::Result<(Playpanel, Option<Url>)> {
    let sandbox = if args.sandbox {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = Url::parse(&format!("http://{}/", listener.local_addr()?))?;
        tokio::spawn(Sandbox::new(SandboxConfig::default()).serve(listener, cancel.clone()));
        say!("sandbox (TikTok pages and upstream panel) at {url}");
        Some(url)
    } else {
        args.sandbox_url.clone()
    };

    let mut settings = match &sandbox {
        Some(url) => Settings::for_sandbox(&args.database, url),
        None => {
            let (Some(upstream_url), Some(upstream_key)) = (&args.upstream_url, &args.upstream_key)
            else {
                bail!(
                    "set --upstream-url and --upstream-key (or run with --sandbox to try \
                     playpanel without a provider)"
                );
            };
            let mut settings =
                Settings::for_sandbox(&args.database, &Url::parse("http://unused/")?);
            settings.upstream_url = upstream_url.clone();
            settings.upstream_key = upstream_key.clone();
            settings.reader = Default::default();
            settings.worker = Default::default();
            settings
        }
    };
    if sandbox.is_none() && args.catalogue.is_none() {
        warn!("no --catalogue given: selling the built-in services 1 and 2");
    }
    if let Some(path) = &args.catalogue {
        settings.catalogue = Catalogue::from_toml_file(path).map_err(anyhow::Error::msg)?;
    }
    if let Some(rate) = args.tiktok_rate {
        settings.reader.rate_per_second = rate;
    }
    let r = &mut settings.reader;
    r.count_ttl = seconds(args.count_ttl, r.count_ttl)?;
    r.breaker_base = seconds(args.breaker, r.breaker_base)?;
    if let Some(agent) = &args.user_agent {
        settings.reader.user_agent = agent.clone();
    }
    let w = &mut settings.worker;
    w.verify_grace = seconds(args.verify_grace, w.verify_grace)?;
    w.verify_checks = args.verify_checks.unwrap_or(w.verify_checks);
    w.progress_interval = seconds(args.progress_interval, w.progress_interval)?;
    w.watch_window = seconds(args.watch_window, w.watch_window)?;
    w.lease = seconds(args.lease, w.lease)?;
    w.provider_refuses_duplicates |= args.provider_refuses_duplicates;
    settings.api.refuse_same_video = args.same_video == SameVideo::Refuse;
    settings.api.status_cache_ttl = seconds(Some(args.status_cache), Duration::ZERO)?;
    settings.api.key_rate_per_second = args.key_rate;
    settings.api.ready_max_wait = seconds(Some(args.ready_max_wait), Duration::ZERO)?;
    settings.api.refill_window = seconds(Some(args.refill_days * 86_400.0), Duration::ZERO)?;
    let outside_calls = settings.reader.timeout * 3;
    if settings.worker.lease < outside_calls {
        warn!(
            lease_s = settings.worker.lease.as_secs_f64(),
            "the lease is shorter than one step's outside calls may take; another worker may \
             take an order over while it is still being worked on"
        );
    }

    settings.admin_token = admin_token;
    let playpanel = Playpanel::new(settings).await?;
    if let Some(listen) = args.metrics_listen {
        let store = playpanel.store.clone();
        let address = playpanel::telemetry::serve_metrics(listen, store, cancel.clone())
            .await
            .with_context(|| format!("cannot serve metrics on {listen}"))?;
        say!("metrics on http://{address}/metrics");
    }
    info!(database = %args.database, "playpanel ready");
    Ok((playpanel, sandbox))
}

/// Prints a line to stdout for whoever started the process (addresses, the demo key),
/// ignoring a closed stdout: a long-running server must not fall over because the program
/// reading its first lines (`| head`, a log shipper) went away.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, $($arg)*);
        let _ = out.flush();
    }};
}
use say;

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        // A log line that cannot be written (stderr a closed pipe) is dropped, not reported
        // with `eprintln!`, which would panic in whatever task was logging.
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn stop_on_signal(cancel: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    cancel.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("stopping: finishing the work in flight");
    cancel.cancel();
}
