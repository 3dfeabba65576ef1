//! The `freshet` binary: `freshet serve` runs the server.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokio::sync::watch;

// Memory freed by evicted state goes back to the OS within seconds, and
// RocksDB's allocations (unprefixed malloc) share the same allocator.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options: purge freed pages with MADV_DONTNEED after a second
/// (muzzy pages left to the kernel's MADV_FREE would still count as resident
/// until memory runs short), from a background thread.
#[cfg(not(target_env = "msvc"))]
#[unsafe(no_mangle)]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Default port: near Postgres's 5432 without clashing with it.
const DEFAULT_LISTEN: &str = "127.0.0.1:5488";

#[derive(Parser)]
#[command(name = "freshet", version, about = "A streaming SQL database speaking the Postgres protocol")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on for Postgres clients.
        #[arg(long, env = "FRESHET_LISTEN", default_value = DEFAULT_LISTEN)]
        listen: String,
        /// Directory for the server's data.
        #[arg(long, env = "FRESHET_DATA_DIR", default_value = "./freshet-data")]
        data_dir: PathBuf,
        /// Dataflow workers each stateful operator is partitioned over
        /// (default: the number of cores).
        #[arg(long, env = "FRESHET_WORKERS")]
        workers: Option<usize>,
        /// Fsync the write-ahead log before acknowledging each commit
        /// (`false`: a commit survives a crash of the server but not of the
        /// machine, and commits are cheaper).
        #[arg(long, env = "FRESHET_SYNC_COMMITS", default_value_t = true, action = clap::ArgAction::Set)]
        sync_commits: bool,
        /// Memory for state, in MiB: half for the operators' caches, half for
        /// the store's block cache and write buffers (at least 8 MiB). State
        /// beyond it stays on disk and is read back when needed. 0 keeps no
        /// operator state in memory between epochs (slow; for testing).
        #[arg(long, env = "FRESHET_MEMORY_BUDGET_MB", default_value_t = 1024)]
        memory_budget_mb: usize,
        /// Milliseconds between checkpoints of the operators' state. Every
        /// commit is durable and visible at once either way; between
        /// checkpoints a commit logs its table changes instead of writing
        /// state, and a restart replays that log. 0 checkpoints every commit.
        #[arg(long, env = "FRESHET_CHECKPOINT_INTERVAL_MS", default_value_t = 1000)]
        checkpoint_interval_ms: u64,
        /// How clients log in: `trust` (any user name, no password; for
        /// local development), `scram-sha-256` or `md5` (a role's password).
        #[arg(long, env = "FRESHET_AUTH", default_value = "trust")]
        auth: freshet::server::auth::AuthMethod,
        /// Password of the bootstrap superuser `freshet` for this run (else
        /// the one last set with ALTER ROLE freshet PASSWORD '…').
        #[arg(long, env = "FRESHET_SUPERUSER_PASSWORD", hide_env_values = true)]
        superuser_password: Option<String>,
        /// PEM certificate chain for TLS (with --tls-key): clients may then
        /// connect with sslmode=require.
        #[arg(long, env = "FRESHET_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of the TLS certificate.
        #[arg(long, env = "FRESHET_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Clients connected at once; one more is refused with SQLSTATE
        /// 53300 ("too many clients"), as PostgreSQL's max_connections.
        #[arg(long, env = "FRESHET_MAX_CONNECTIONS", default_value_t = freshet::server::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        /// Memory one ad-hoc query may take, in MiB: its sorts and grouped
        /// aggregates spill to disk beyond it, anything else that needs more
        /// (a hash join's build side, an INSERT … SELECT's rows) fails with
        /// SQLSTATE 53200 while other sessions go on.
        #[arg(long, env = "FRESHET_QUERY_MEMORY_MB", default_value_t = freshet::sql::query_memory::DEFAULT_QUERY_MEMORY_BYTES >> 20)]
        query_memory_mb: usize,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FRESHET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    freshet::server::connection::log_panics();
    let cli = Cli::parse();
    // Statements are parsed, planned and run on the runtime's threads and
    // the dataflow pool; their stacks fit the deepest statement accepted.
    let stack = freshet::server::STATEMENT_STACK_BYTES;
    if let Err(error) = rayon::ThreadPoolBuilder::new().stack_size(stack).build_global() {
        eprintln!("freshet: cannot start the dataflow pool: {error}");
        return std::process::ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(stack).build() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("freshet: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve {
            listen,
            data_dir,
            workers,
            sync_commits,
            memory_budget_mb,
            checkpoint_interval_ms,
            auth,
            superuser_password,
            tls_cert,
            tls_key,
            max_connections,
            query_memory_mb,
        } => {
            let options = ServeOptions {
                listen,
                data_dir,
                workers,
                sync_commits,
                memory_budget_mb,
                checkpoint_interval_ms,
                auth,
                superuser_password,
                tls: tls_cert.zip(tls_key),
                max_connections,
                query_memory_mb,
            };
            // On a runtime thread, not the main thread: recovery plans every
            // stored view, and needs the same stack as a statement.
            let served = runtime.block_on(async {
                tokio::spawn(serve(options))
                    .await
                    .unwrap_or_else(|e| Err(format!("the server task failed: {e}").into()))
            });
            match served {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "freshet stopped");
                    eprintln!("freshet: {error}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

struct ServeOptions {
    listen: String,
    data_dir: PathBuf,
    workers: Option<usize>,
    sync_commits: bool,
    memory_budget_mb: usize,
    checkpoint_interval_ms: u64,
    auth: freshet::server::auth::AuthMethod,
    superuser_password: Option<String>,
    tls: Option<(PathBuf, PathBuf)>,
    max_connections: usize,
    query_memory_mb: usize,
}

async fn serve(options: ServeOptions) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let ServeOptions {
        listen,
        data_dir,
        workers,
        sync_commits,
        memory_budget_mb,
        checkpoint_interval_ms,
        auth,
        superuser_password,
        tls,
        max_connections,
        query_memory_mb,
    } = options;
    // A bad certificate stops the server before it recovers anything.
    let tls = match tls {
        Some((cert, key)) => Some(freshet::server::auth::tls_acceptor(&cert, &key)?),
        None => None,
    };
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("cannot create data dir {}: {e}", data_dir.display()))?;
    let workers = workers.unwrap_or_else(freshet::sql::default_workers).max(1);
    tracing::info!(workers, "dataflow workers");
    let started = std::time::Instant::now();
    let budget = memory_budget_mb << 20;
    let options = freshet::state::StoreOptions { sync: sync_commits, cache_bytes: budget / 2 };
    let store = freshet::state::DurableStore::open(&data_dir.join("state"), options).map_err(|e| e.message)?;
    let stored_bytes = store.estimated_bytes();
    let state_budget = freshet::stream::state_table::StateBudget::new(budget / 2);
    let checkpoint_interval = std::time::Duration::from_millis(checkpoint_interval_ms);
    let engine =
        freshet::sql::Engine::with_store(std::sync::Arc::new(store), workers, state_budget, checkpoint_interval)
            .map_err(|e| e.message)?;
    engine.query_memory.set(query_memory_mb.max(1) << 20);
    let recovery = engine.recover().await.map_err(|e| e.message)?;
    // Views with temporal filters (now() in WHERE) move on once a second
    // when no data arrives (FRESHET_CLOCK_TICK_MS overrides the period).
    let tick_ms = std::env::var("FRESHET_CLOCK_TICK_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000u64);
    let clock_tick = std::time::Duration::from_millis(tick_ms.max(1));
    freshet::db::background::start(&engine.coordinator, &engine.catalog, clock_tick);
    tracing::info!(
        data_dir = %data_dir.display(),
        relations = recovery.relations,
        stored_bytes,
        memory_budget_mb,
        epoch = recovery.epoch,
        replayed_epochs = recovery.replayed_epochs,
        sync_commits,
        checkpoint_interval_ms,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovered"
    );
    let listener =
        tokio::net::TcpListener::bind(&listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop.send(true);
    });
    let access = &engine.catalog.access;
    if let Some(password) = superuser_password {
        let bootstrap = freshet::catalog::privileges::BOOTSTRAP_ROLE;
        if let Some(mut role) = access.role(bootstrap) {
            role.password = Some(freshet::catalog::privileges::PasswordVerifier::new(bootstrap, &password));
            access.set_role(role);
        }
    }
    if auth != freshet::server::auth::AuthMethod::Trust
        && !access.roles().iter().any(|r| r.superuser && r.login && r.password.is_some())
    {
        tracing::warn!(
            "no superuser has a password: set FRESHET_SUPERUSER_PASSWORD (or start once with --auth trust and ALTER ROLE freshet PASSWORD '…')"
        );
    }
    tracing::info!(auth = ?auth, tls = tls.is_some(), "client authentication");
    let security = freshet::server::Security { auth, tls, max_connections };
    freshet::server::serve(listener, engine, security, stopped).await?;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
