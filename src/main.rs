//! `aos`: run a task, run the local stack, benchmark, inspect; and the commands that
//! drive any AOS (tasks, follow, submit, cancel, approvals, schedules, dead letters)
//! on the local store or through a remote API (`cli`). Setup only; the logic lives
//! in the library crates.

mod cli;

use anyhow::{Context, bail};
use aos::bench;
use aos::render;
use aos::runtime::{Runtime, RuntimeConfig};
use aos_entrypoints::http::auth::{Claims, load_or_create_secret, mint, now_secs};
use aos_entrypoints::http::{AppState, Auth, app};

use aos_kernel::{ScheduleKind, TaskId, TaskStatus};
use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand};
use cli::commands;
use cli::config::ApiArgs;
use cli::progress::{Out, Progress};
use cli::target::Target;
use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// AOS: perpetual AI agents on AWS serverless, running here on one embedded store.
#[derive(Debug, Parser)]
#[command(name = "aos", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one request to completion and print the answer and its timeline.
    Run {
        /// What you want done, e.g. "What's the weather in Paris?"
        request: String,
        /// The agent that takes the request.
        #[arg(long, default_value = "primary")]
        agent: String,
        /// Give up after this many seconds (the task keeps its state).
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
        /// Print only the answer.
        #[arg(long, short)]
        quiet: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Run the local stack with its HTTP API (v1) until Ctrl-C; prints an admin token
    /// for tenant `default` at start.
    Dev {
        /// Address of the HTTP API (port 0 picks a free port).
        #[arg(long, env = "AOS_ADDR", default_value = "127.0.0.1:8080")]
        addr: String,
        #[command(flatten)]
        secret: SecretArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Print a bearer token for the local API, signed with the local secret.
    Token {
        /// The tenant whose data the token reaches.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Space-separated scopes: read, write, admin (each includes the ones before).
        #[arg(long, default_value = "read write admin")]
        scope: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// Who the token speaks for (recorded as the decider of approvals).
        #[arg(long, default_value = "cli")]
        sub: String,
        #[command(flatten)]
        secret: SecretArgs,
        /// The embedded store file; the generated secret is kept beside it.
        #[arg(long, env = "AOS_DB", default_value = ".aos/aos.db")]
        db: PathBuf,
    },
    /// Save an AOS API's URL and token (checked first) for the commands below;
    /// `aos logout` forgets them.
    Login {
        /// The API, e.g. http://127.0.0.1:8080 (what `aos dev` prints).
        url: String,
        /// The bearer token; without it (or AOS_TOKEN), one line is read from stdin.
        #[arg(long, env = "AOS_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Forget the API `aos login` saved: commands use the local store again.
    Logout,
    /// List tasks, newest first: id, status, agent, cost, age and request.
    Tasks {
        /// Only tasks with this status.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// Tasks per page (1-1000).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// The next page: the cursor the previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        on: On,
    },
    /// Show a task's answer and timeline; with --follow, print its events as they
    /// happen until it ends. Exits 0 when the task succeeded, 1 otherwise.
    Task {
        /// The task's id (`aos tasks` lists them).
        id: String,
        /// Print events live until the task ends (on the local store, this process
        /// runs the agents meanwhile).
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        on: On,
    },
    /// Submit a task and print its id; with --wait, follow it to the end.
    Submit {
        /// What you want done, e.g. "What's the weather in Paris?"
        input: String,
        /// The agent that takes it.
        #[arg(long, default_value = "primary")]
        agent: String,
        /// Makes a retry safe: the same key and input again is the same task.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Follow the task until it ends (as `aos task <id> --follow`); exits 0 when
        /// it succeeded, 1 otherwise.
        #[arg(long, short)]
        wait: bool,
        #[command(flatten)]
        on: On,
    },
    /// Cancel an unfinished task: its later messages are acknowledged without running.
    Cancel {
        /// The task's id.
        id: String,
        /// Why, for the timeline.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        on: On,
    },
    /// List the approvals waiting for a person's decision.
    Approvals {
        #[command(flatten)]
        on: On,
    },
    /// Approve (or, with --deny, deny) a tool call waiting for a person.
    Approve {
        /// The approval's id (`aos approvals` lists them).
        id: String,
        /// Deny instead: the tool never runs and the model is told so.
        #[arg(long)]
        deny: bool,
        /// A note for the audit log (and, on a denial, the model).
        #[arg(long)]
        note: Option<String>,
        /// Who decides, for the audit log (on the local store; through an API, the
        /// token's subject).
        #[arg(long, default_value = "cli")]
        by: String,
        #[command(flatten)]
        on: On,
    },
    /// Task schedules: a task or wake-up for an agent on a cron or rate timetable,
    /// or once.
    Schedule {
        #[command(subcommand)]
        action: ScheduleAction,
    },
    /// A task's hash-chained audit log: verify it, or show it.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Print throughput and memory figures of the embedded runtime.
    Bench {
        /// Tasks drained for the wakes-per-second figure (5 wakes each).
        #[arg(long, default_value_t = 2000)]
        tasks: usize,
        /// Tasks for the end-to-end figure.
        #[arg(long, default_value_t = 500)]
        e2e_tasks: usize,
        /// Trigger workers per agent for the end-to-end figure.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// `aws`: the AWS adapters against moto server (started here): AWS calls per
        /// wake and cost per million wakes.
        #[arg(long, value_enum, default_value = "local")]
        backend: BackendKind,
        /// Tasks for the AWS backend figures (5 wakes each).
        #[arg(long, default_value_t = 40)]
        aws_tasks: usize,
        /// Instead: each Lambda function binary's stripped and zipped size, glibc
        /// needs, cold start and peak memory (builds them in release mode first).
        #[arg(long)]
        lambda: bool,
        /// With --lambda: take the binaries from here instead of building them.
        #[arg(long, requires = "lambda")]
        bin_dir: Option<PathBuf>,
        /// With --lambda: cold starts measured per function (the median is printed).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// List the agents.
    Agents {
        #[command(flatten)]
        on: On,
    },
    /// Show an agent's dead-letter queue; with --redrive, move it back to the queue.
    Dlq {
        /// The agent whose queue it is.
        agent: String,
        /// Move every dead letter back to the agent's queue (after listing them).
        #[arg(long)]
        redrive: bool,
        #[command(flatten)]
        on: On,
    },
    /// Replay a recorded AWS event (any file in events/: an SQS batch, an API Gateway
    /// HTTP API v2 request or an EventBridge Scheduler firing, told apart by its shape)
    /// through the handler Lambda runs for it, on this store; or (`--task`) re-run a
    /// finished task from its journal with no model and no tool calls and print the
    /// diff of its timeline against the original.
    Replay {
        /// Path to the event JSON.
        #[arg(required_unless_present = "task", conflicts_with = "task")]
        file: Option<PathBuf>,
        /// For an SQS event: the agent whose queue it came from (default: the queue in
        /// its eventSourceARN, else the envelope's `to`).
        #[arg(long, conflicts_with = "task")]
        agent: Option<String>,
        /// A finished task to re-run from its recorded model responses and tool results.
        #[arg(long)]
        task: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Subcommand)]
enum ScheduleAction {
    /// Create a schedule and print its id.
    Create {
        /// What each firing asks.
        input: String,
        /// The agent each firing submits a task to.
        #[arg(long, default_value = "primary")]
        agent: String,
        /// `cron(0 9 ? * MON-FRI *)`, `rate(5 minutes)`, `at(2030-01-01T09:00:00)` or
        /// an RFC 3339 time; UTC.
        #[arg(long)]
        when: String,
        /// `task`: each firing submits the input as a task; `wakeup`: a task whose
        /// input is `Scheduled wake-up: <input>`.
        #[arg(long, value_enum, default_value = "task")]
        kind: KindArg,
        #[command(flatten)]
        on: On,
    },
    /// List the schedules with their next firing.
    List {
        #[command(flatten)]
        on: On,
    },
    /// Delete a schedule.
    Delete {
        /// The schedule's id (`aos schedule list` lists them).
        id: String,
        #[command(flatten)]
        on: On,
    },
}

/// A task status, as `--status` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum StatusArg {
    Queued,
    Running,
    Waiting,
    Succeeded,
    Failed,
    Cancelled,
}

impl From<StatusArg> for TaskStatus {
    fn from(s: StatusArg) -> Self {
        match s {
            StatusArg::Queued => TaskStatus::Queued,
            StatusArg::Running => TaskStatus::Running,
            StatusArg::Waiting => TaskStatus::Waiting,
            StatusArg::Succeeded => TaskStatus::Succeeded,
            StatusArg::Failed => TaskStatus::Failed,
            StatusArg::Cancelled => TaskStatus::Cancelled,
        }
    }
}

/// What a schedule's firing does, as `--kind` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum KindArg {
    Task,
    Wakeup,
}

impl From<KindArg> for ScheduleKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Task => ScheduleKind::Task,
            KindArg::Wakeup => ScheduleKind::Wakeup,
        }
    }
}

/// Where a command that works on any AOS goes: the API (`--api`, `AOS_API_URL` or
/// `aos login`), else the local store.
#[derive(Debug, Args)]
struct On {
    #[command(flatten)]
    api: ApiArgs,
    /// On the local store: the tenant acted for (through an API, the token's).
    #[arg(long, default_value = "default", help_heading = "Local store")]
    tenant: String,
    #[command(flatten, next_help_heading = "Local store")]
    common: Common,
}

impl On {
    async fn target(&self) -> anyhow::Result<Target> {
        Target::open(&self.api, &self.common, &self.tenant).await
    }
}

#[derive(Debug, Subcommand)]
enum AuditAction {
    /// Recompute the chain: exit 0 with "ok: N records", or 1 naming the first record
    /// that does not match.
    Verify {
        task: String,
        #[command(flatten)]
        common: Common,
    },
    /// Print every audit record of the task.
    Show {
        task: String,
        #[command(flatten)]
        common: Common,
    },
}

/// Where the local API's signing secret comes from.
#[derive(Debug, Args)]
struct SecretArgs {
    /// The HS256 secret tokens are signed with. Without it, one is generated once and
    /// kept in `jwt-secret` beside the store (mode 0600), so tokens survive restarts.
    #[arg(long, env = "AOS_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
}

impl SecretArgs {
    fn load(&self, db: &std::path::Path) -> anyhow::Result<String> {
        if let Some(s) = self.jwt_secret.as_ref().filter(|s| !s.trim().is_empty()) {
            return Ok(s.trim().to_string());
        }
        let path = db
            .parent()
            .unwrap_or_else(|| std::path::Path::new("."))
            .join("jwt-secret");
        load_or_create_secret(&path)
            .with_context(|| format!("reading or creating the API secret {}", path.display()))
    }
}

/// A token signed with `secret`.
fn token(secret: &str, tenant: &str, scope: &str, ttl: u64, sub: &str) -> anyhow::Result<String> {
    if !aos_entrypoints::http::auth::valid_tenant(tenant) {
        bail!("--tenant {tenant:?}: use 1-64 lowercase letters, digits, '-' or '_'");
    }
    for s in scope.split_whitespace() {
        if aos_entrypoints::http::Scope::parse(s).is_none() {
            bail!("--scope: unknown scope {s:?}; use read, write or admin");
        }
    }
    Ok(mint(
        secret.as_bytes(),
        &Claims {
            sub: sub.to_string(),
            tenant: tenant.to_string(),
            scope: scope.to_string(),
            exp: now_secs() + ttl,
            iat: Some(now_secs()),
            nbf: None,
            iss: None,
            aud: None,
        },
    ))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BackendKind {
    /// One SQLite file (no account, no network).
    Local,
    /// DynamoDB, SQS, S3 and EventBridge Scheduler through the AWS SDK; set
    /// AWS_ENDPOINT_URL for an emulator, or pass --emulator.
    Aws,
}

#[derive(Debug, Args)]
struct Common {
    /// Where state and queues live.
    #[arg(long, env = "AOS_BACKEND", value_enum, default_value = "local")]
    backend: BackendKind,
    /// With --backend aws: install (once) and start moto server, the AWS emulator, on
    /// a free loopback port for this run.
    #[arg(long, env = "AOS_EMULATOR", action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    emulator: bool,
    /// The embedded store file.
    #[arg(long, env = "AOS_DB", default_value = ".aos/aos.db")]
    db: PathBuf,
    /// Never call the network from tools (bundled sample data, said so in answers).
    /// `--offline`, `--offline=false`; AOS_OFFLINE takes 1/0, true/false, yes/no, on/off.
    #[arg(long, env = "AOS_OFFLINE", action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    offline: bool,
    /// Trigger workers per agent.
    #[arg(long, env = "AOS_CONCURRENCY", default_value_t = 4)]
    concurrency: usize,
    /// Simulated latency of the offline model, in ms.
    #[arg(long, env = "AOS_MODEL_LATENCY_MS", default_value_t = 0)]
    model_latency_ms: u64,
    /// Receives before a message goes to the dead-letter queue.
    #[arg(long, env = "AOS_MAX_RECEIVES", default_value_t = 5)]
    max_receives: u32,
    /// The model route for every agent (`provider:model`, e.g. `openai:gpt-4o-mini`,
    /// `anthropic:claude-haiku-4-5`, `bedrock:amazon.nova-lite-v1:0`, `offline`).
    /// Without it, agents whose model is `auto` use the first provider whose key is set
    /// (ANTHROPIC_API_KEY, then OPENAI_API_KEY / OPENAI_BASE_URL), else the offline model.
    #[arg(long, env = "AOS_MODEL")]
    model: Option<String>,
    /// Your copy of the model price table (default: functions/prices.toml, built in).
    #[arg(long, env = "AOS_PRICES")]
    prices: Option<PathBuf>,
    /// Hosts `http_get` may fetch from (exact hosts or `*.example.com`), comma-separated.
    #[arg(long, env = "AOS_HTTP_ALLOW", value_delimiter = ',')]
    http_allow: Vec<String>,
    /// An MCP server whose tools agents may call, as `name=url` (streamable HTTP),
    /// repeatable or comma-separated. Its tools are named `<name>__<tool>`; list them
    /// in an agent's `tools`. A bearer token comes from AOS_MCP_TOKEN_<NAME>.
    #[arg(long = "mcp", env = "AOS_MCP", value_delimiter = ',')]
    mcp: Vec<String>,
}

/// Connects to the MCP servers named by `--mcp` and lists their tools, once.
async fn mcp_tools(
    specs: &[String],
) -> anyhow::Result<Vec<std::sync::Arc<dyn aos_kernel::tools::Tool>>> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let mut servers = Vec::new();
    for spec in specs {
        let Some((name, url)) = spec.split_once('=') else {
            bail!("--mcp {spec:?}: expected name=url, e.g. crm=https://mcp.example.com/mcp");
        };
        let mut server = aos_mcp::McpServer::new(name.trim(), url.trim());
        let var = format!(
            "AOS_MCP_TOKEN_{}",
            name.trim().to_uppercase().replace('-', "_")
        );
        if let Ok(token) = std::env::var(&var) {
            server = server.header("Authorization", format!("Bearer {token}"));
        }
        servers.push(server);
    }
    aos_mcp::connect(&servers)
        .await
        .context("listing the tools of the MCP servers")
}

/// Which models answer, and why: what `aos` prints before it runs anything.
struct ModelChoice {
    kernel: aos_kernel::KernelConfig,
    providers: aos::runtime::Providers,
    said: String,
}

/// A boolean setting from the environment: 1/0, true/false, yes/no, on/off.
fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on" | "y" | "t"
    )
}

/// Reads the provider settings from the environment (the one place that does).
async fn choose_models(
    model: Option<&str>,
    prices: Option<&std::path::Path>,
) -> anyhow::Result<ModelChoice> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let wants_bedrock = model.is_some_and(|m| m.starts_with("bedrock:"))
        || var("AOS_BEDROCK").is_some_and(|v| truthy(&v));
    let bedrock = if wants_bedrock {
        Some(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .load()
                .await,
        )
    } else {
        None
    };
    let config = aos_models::ProviderConfig {
        openai_api_key: var("OPENAI_API_KEY"),
        openai_base_url: var("OPENAI_BASE_URL"),
        anthropic_api_key: var("ANTHROPIC_API_KEY"),
        anthropic_base_url: var("ANTHROPIC_BASE_URL"),
        bedrock,
    };
    let providers = aos_models::Providers::new(config).context("setting up the model providers")?;
    let prefixes: Vec<String> = providers.prefixes().map(str::to_string).collect();
    let (default_model, why) = match (var("AOS_DEFAULT_MODEL"), providers.default_route()) {
        (Some(m), _) => (m, "AOS_DEFAULT_MODEL".to_string()),
        (None, Some(route)) if route.starts_with("anthropic:") => {
            (route.to_string(), "ANTHROPIC_API_KEY is set".to_string())
        }
        (None, Some(route)) => (
            route.to_string(),
            "OPENAI_API_KEY or OPENAI_BASE_URL is set".to_string(),
        ),
        (None, None) => (
            "offline".to_string(),
            "no provider configured: pass --model or set ANTHROPIC_API_KEY or OPENAI_API_KEY"
                .to_string(),
        ),
    };
    let said = match model {
        Some(m) => format!("model: {m} (--model)"),
        None => format!("model: {default_model} ({why})"),
    };
    if let Some(m) = model {
        let p = aos_kernel::route::provider_of(m);
        if p != "offline" && !prefixes.iter().any(|x| x == p) {
            bail!(
                "--model {m}: provider '{p}' is not configured (configured: offline{}); set its key (OPENAI_API_KEY, ANTHROPIC_API_KEY) or AOS_BEDROCK=1",
                prefixes
                    .iter()
                    .map(|p| format!(", {p}"))
                    .collect::<String>()
            );
        }
    }
    let table = match prices {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the price table {}", path.display()))?,
        None => aos_agents::PRICES.to_string(),
    };
    let prices = aos_kernel::prices::PriceTable::from_toml(&table).map_err(anyhow::Error::msg)?;
    let kernel = aos_kernel::KernelConfig {
        default_model,
        model_override: model.map(str::to_string),
        prices: std::sync::Arc::new(prices),
        ..aos_kernel::KernelConfig::default()
    };
    Ok(ModelChoice {
        kernel,
        providers: aos::runtime::Providers(providers.into_map().into_iter().collect()),
        said,
    })
}

/// An opened runtime, and the emulator it runs on, if this process started one.
struct Opened {
    runtime: Runtime,
    _moto: Option<aos_aws::emulator::Moto>,
    /// What `aos` prints as "store:".
    shown: String,
    /// Which model answers, and why.
    models: String,
}

impl Common {
    async fn open(&self) -> anyhow::Result<Opened> {
        let mut config = self.config();
        let models = choose_models(self.model.as_deref(), self.prices.as_deref()).await?;
        config.kernel = models.kernel;
        config.providers = models.providers;
        config.extra_tools = aos::runtime::ExtraTools(mcp_tools(&self.mcp).await?);
        let said = models.said;
        match self.backend {
            BackendKind::Local => Ok(Opened {
                runtime: Runtime::open(config)
                    .with_context(|| format!("opening the store at {}", self.db.display()))?,
                _moto: None,
                shown: self.db.display().to_string(),
                models: said,
            }),
            BackendKind::Aws => {
                let clock: std::sync::Arc<dyn aos_kernel::ports::Clock> =
                    std::sync::Arc::new(aos_kernel::ports::SystemClock);
                let mut settings = aos_aws::AwsSettings::from_env();
                settings.queues.max_receives = self.max_receives;
                let (aws, moto) = if self.emulator {
                    let moto = tokio::task::spawn_blocking(aos_aws::emulator::Moto::start_default)
                        .await??;
                    let sdk = aos_aws::emulator_sdk_config(moto.endpoint()).await;
                    let aws =
                        aos_aws::AwsBackend::new(aos_aws::AwsClients::new(&sdk), settings, clock);
                    (aws, Some(moto))
                } else {
                    let sdk = aos_aws::load_sdk_config().await;
                    let aws =
                        aos_aws::AwsBackend::new(aos_aws::AwsClients::new(&sdk), settings, clock);
                    (aws, None)
                };
                let endpoint = match &moto {
                    Some(m) => Some(m.endpoint().to_string()),
                    None => std::env::var("AWS_ENDPOINT_URL").ok(),
                };
                let mut config = config;
                // Only an emulator needs this process to create resources and fire
                // schedules; on AWS the template and the service do.
                config.deliver_schedules = endpoint.is_some();
                let shown = format!(
                    "DynamoDB table {} via {}",
                    aws.settings.table,
                    endpoint.as_deref().unwrap_or("AWS")
                );
                let runtime = Runtime::open_aws(config, aws.clone())?;
                if endpoint.is_some() {
                    let agents: Vec<String> = runtime
                        .kernel()
                        .catalog()
                        .agents()
                        .map(|a| a.name.to_string())
                        .collect();
                    let names: Vec<&str> = agents.iter().map(String::as_str).collect();
                    aos_aws::provision(&aws, &names).await.context(
                        "creating the table, bucket, queues and schedule group on the emulator",
                    )?;
                }
                Ok(Opened {
                    runtime,
                    _moto: moto,
                    shown,
                    models: said,
                })
            }
        }
    }

    fn config(&self) -> RuntimeConfig {
        let mut c = RuntimeConfig {
            db: self.db.clone(),
            concurrency: self.concurrency,
            model_latency_ms: self.model_latency_ms,
            max_receives: self.max_receives,
            ..RuntimeConfig::default()
        };
        c.tools.offline = self.offline;
        c.tools.http_allow = self.http_allow.clone();
        c
    }

    fn aws_counter(&self, opened: &Opened) -> Option<aos_aws::CallCounter> {
        match opened.runtime.backend() {
            aos::runtime::Backend::Aws(aws) => Some(aws.counter().clone()),
            aos::runtime::Backend::Local(_) => None,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Dev { .. } => "info,aos=info",
        // Tool fallbacks are said in the answer itself; no need to log them here.
        _ => "warn,aos_agents=error",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Command::Bench {
        tasks,
        e2e_tasks,
        concurrency,
        backend,
        aws_tasks,
        lambda,
        bin_dir,
        runs,
    } = cli.command
    {
        if lambda {
            return aos::lambda_bench::run(bin_dir, runs);
        }
        return match backend {
            BackendKind::Local => run_bench(tasks, e2e_tasks, concurrency),
            BackendKind::Aws => run_aws_bench(aws_tasks),
        };
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let code = rt.block_on(async move {
        match cli.command {
            Command::Run {
                request,
                agent,
                timeout_secs,
                quiet,
                common,
            } => run(&request, &agent, timeout_secs, quiet, &common).await,
            Command::Dev {
                addr,
                secret,
                common,
            } => dev(&addr, &secret, &common).await.map(|()| 0),
            Command::Token {
                tenant,
                scope,
                ttl,
                sub,
                secret,
                db,
            } => {
                println!("{}", token(&secret.load(&db)?, &tenant, &scope, ttl, &sub)?);
                Ok(0)
            }
            Command::Login { url, token } => commands::login(&url, token.as_deref()).await,
            Command::Logout => commands::logout(),
            Command::Tasks {
                status,
                limit,
                cursor,
                on,
            } => {
                let target = on.target().await?;
                commands::tasks(&target, status.map(Into::into), limit, cursor.as_deref()).await
            }
            Command::Task { id, follow, on } => {
                commands::task(&on.target().await?, &id, follow).await
            }
            Command::Submit {
                input,
                agent,
                idempotency_key,
                wait,
                on,
            } => {
                let target = on.target().await?;
                commands::submit(&target, &input, &agent, idempotency_key.as_deref(), wait).await
            }
            Command::Cancel { id, reason, on } => {
                commands::cancel(&on.target().await?, &id, reason.as_deref()).await
            }
            Command::Approvals { on } => commands::approvals(&on.target().await?, &on.tenant).await,
            Command::Approve {
                id,
                deny,
                note,
                by,
                on,
            } => {
                let target = on.target().await?;
                commands::approve(&target, &id, !deny, note.as_deref(), &by).await
            }
            Command::Schedule { action } => match action {
                ScheduleAction::Create {
                    input,
                    agent,
                    when,
                    kind,
                    on,
                } => {
                    let target = on.target().await?;
                    commands::schedule_create(&target, &agent, kind.into(), &input, &when).await
                }
                ScheduleAction::List { on } => commands::schedule_list(&on.target().await?).await,
                ScheduleAction::Delete { id, on } => {
                    commands::schedule_delete(&on.target().await?, &id).await
                }
            },
            Command::Audit { action } => match action {
                AuditAction::Verify { task, common } => audit_verify(&task, &common).await,
                AuditAction::Show { task, common } => audit_show(&task, &common).await,
            },
            Command::Agents { on } => commands::agents(&on.target().await?).await,
            Command::Dlq { agent, redrive, on } => {
                commands::dlq(&on.target().await?, &agent, redrive).await
            }
            Command::Replay {
                file,
                agent,
                task,
                common,
            } => match (task, file, agent) {
                (Some(task), _, _) => replay_task(&task, &common).await,
                (None, Some(file), agent) => replay(&file, agent.as_deref(), &common).await,
                _ => bail!("aos replay needs an event file (see events/) or --task <id>"),
            },
            Command::Bench { .. } => Ok(0),
        }
    });
    // One line a person reads (the cause chain joined), not a Debug dump.
    let code = code.unwrap_or_else(|e| {
        eprintln!("aos: {e:#}");
        1
    });
    std::process::exit(code);
}

async fn run(
    request: &str,
    agent: &str,
    timeout_secs: u64,
    quiet: bool,
    common: &Common,
) -> anyhow::Result<i32> {
    let opened = common.open().await?;
    let runtime = &opened.runtime;
    let counter = common.aws_counter(&opened);
    let running = runtime.start().await?;
    let kernel = runtime.kernel().clone();
    let task = kernel.submit(agent, request, None).await?;
    if !quiet {
        eprintln!(
            "Task {} submitted to {agent} (store: {}; {})",
            task.id, opened.shown, opened.models
        );
    }
    let store = kernel.ports().tasks.clone();
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let mut progress = Progress::new();
    let final_task = loop {
        let current = store
            .get_task(task.id)
            .await?
            .context("the task vanished from the store")?;
        if !quiet {
            let events = store.timeline(task.id).await?;
            for e in &events {
                if seen.insert(e.id) {
                    progress.println(Out::Stderr, &render::progress_line(&current, e));
                }
            }
            let last = events.iter().max_by_key(|e| e.at);
            progress.set(
                format!("task {}", current.status),
                format!(
                    "{}{} events",
                    last.map(|e| format!("{} · ", e.agent)).unwrap_or_default(),
                    events.len()
                ),
            );
            progress.tick();
        }
        if current.status.is_final() {
            progress.finish();
            break current;
        }
        if Instant::now() > deadline {
            progress.finish();
            running.shutdown(Duration::from_secs(5)).await;
            bail!(
                "task {} is still {} after {timeout_secs} s; it is saved and resumes at the next `aos run` or `aos dev` on {}",
                task.id,
                current.status,
                opened.shown
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    running.shutdown(Duration::from_secs(5)).await;
    let events = store.timeline(task.id).await?;
    if quiet {
        match (&final_task.result, &final_task.error) {
            (Some(r), _) => println!("{r}"),
            (_, Some(e)) => eprintln!("task {}: {e}", final_task.status),
            _ => {}
        }
    } else {
        print!("{}", render::report(&final_task, &events, false));
        if let Some(counter) = counter {
            let counts = counter.snapshot();
            println!(
                "AWS calls for this run: {} ({} HTTP attempts)",
                counts.total_calls(),
                counts.total_attempts()
            );
            for (op, n) in &counts.calls {
                println!("  {op:<34} {n}");
            }
        }
    }
    Ok(if final_task.status == TaskStatus::Succeeded {
        0
    } else {
        1
    })
}

async fn dev(addr: &str, secret: &SecretArgs, common: &Common) -> anyhow::Result<()> {
    let secret = secret.load(&common.db)?;
    let opened = common.open().await?;
    let runtime = &opened.runtime;
    let running = runtime.start().await?;
    let (released, resent) = running.recovered;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the HTTP API to {addr}"))?;
    let local = listener.local_addr()?;
    let state = AppState::new(runtime.kernel().clone(), Auth::hs256(secret.as_bytes()))
        .with_inbox(runtime.inbox())
        .with_schedules(runtime.schedules());
    let admin = token(&secret, "default", "read write admin", 24 * 3600, "aos-dev")?;
    println!(
        "AOS dev: listening on http://{local} (store: {})",
        opened.shown
    );
    if released + resent as u64 > 0 {
        println!(
            "AOS dev: resumed {released} in-flight message(s) and {resent} queued task(s) from the last run"
        );
    }
    println!("  dashboard: http://{local}/ (sign in with the token below)");
    println!(
        "  API v1: http://{local}/v1/openapi.json describes it; every route but /v1/health needs a bearer token"
    );
    println!(
        "  POST /v1/tasks · GET /v1/tasks[/{{id}}[/events[/stream]]] · GET /v1/agents · GET /v1/approvals · /v1/schedules · Ctrl-C to stop"
    );
    println!("  admin token for tenant default (24 h; `aos token` mints others):");
    println!("  AOS_TOKEN={admin}");
    std::io::stdout().flush()?;
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    println!("AOS dev: stopping; finishing the batches in hand…");
    running.shutdown(Duration::from_secs(15)).await;
    println!("AOS dev: stopped cleanly; unfinished tasks resume at the next start");
    Ok(())
}

async fn audit_verify(task: &str, common: &Common) -> anyhow::Result<i32> {
    let id: TaskId = task
        .parse()
        .map_err(|_| anyhow::anyhow!("{task:?} is not a task id (a ULID)"))?;
    let opened = common.open().await?;
    let report = opened.runtime.kernel().verify_audit(id).await?;
    match &report.first_mismatch {
        None => {
            println!("ok: {} records", report.records);
            Ok(0)
        }
        Some(bad) => {
            println!(
                "audit log of task {id} does not verify: record {} (event {}): {}",
                bad.record, bad.event, bad.reason
            );
            Ok(1)
        }
    }
}

async fn audit_show(task: &str, common: &Common) -> anyhow::Result<i32> {
    let id: TaskId = task
        .parse()
        .map_err(|_| anyhow::anyhow!("{task:?} is not a task id (a ULID)"))?;
    let opened = common.open().await?;
    let records = opened.runtime.kernel().audit_log(id).await?;
    println!("{} audit record(s) of task {id}", records.len());
    for r in records {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(0)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

async fn replay(
    file: &std::path::Path,
    agent: Option<&str>,
    common: &Common,
) -> anyhow::Result<i32> {
    let opened = common.open().await?;
    let target = aos::events::Target {
        kernel: opened.runtime.kernel().clone(),
        inbox: opened.runtime.inbox(),
        max_receives: common.max_receives,
        store: opened.shown.clone(),
    };
    let replayed = aos::events::replay_file(&target, file, agent).await?;
    print!("{}", replayed.text);
    Ok(if replayed.failed { 1 } else { 0 })
}

async fn replay_task(id: &str, common: &Common) -> anyhow::Result<i32> {
    let id: TaskId = id
        .parse()
        .map_err(|_| anyhow::anyhow!("{id:?} is not a task id (a ULID)"))?;
    let opened = common.open().await?;
    let ports = opened.runtime.kernel().ports().clone();
    let catalog = opened.runtime.kernel().catalog().clone();
    let scratch = std::env::temp_dir().join(format!("aos-replay-{}", std::process::id()));
    eprintln!(
        "Replaying task {id} from its journal in {} (store: {})",
        opened.shown,
        scratch.display()
    );
    let report = aos::replay::replay_task(
        id,
        ports.tasks,
        ports.blobs,
        catalog,
        opened.runtime.config().clone(),
        &scratch,
        Duration::from_secs(120),
    )
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    let report = report?;
    print!("{}", aos::replay::render(&report));
    Ok(if report.same() { 0 } else { 1 })
}

fn run_bench(tasks: usize, e2e_tasks: usize, concurrency: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("aos-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!("AOS bench — embedded SQLite store, offline model, offline tools");
    let one_core = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let w = one_core.block_on(bench::wakes(&dir.join("wakes.db"), tasks, true))?;
    println!(
        "kernel wakes (1 core, incl. receive+delete): {} wakes of {} three-agent tasks in {:.2} s = {:.0} wakes/s",
        w.wakes,
        w.tasks,
        w.seconds,
        w.per_second()
    );
    let multi = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let t = multi.block_on(bench::tasks(
        &dir.join("tasks.db"),
        e2e_tasks,
        concurrency,
        true,
    ))?;
    println!(
        "end-to-end (local runtime, {} workers/agent): {}/{} tasks succeeded in {:.2} s = {:.1} tasks/s; latency p50 {} ms, p95 {} ms",
        concurrency,
        t.succeeded,
        t.tasks,
        t.seconds,
        t.per_second(),
        t.p50_ms,
        t.p95_ms
    );
    let (peak, now) = bench::rss_kib();
    println!(
        "memory: peak RSS {:.1} MiB, current RSS {:.1} MiB",
        peak as f64 / 1024.0,
        now as f64 / 1024.0
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn run_aws_bench(tasks: usize) -> anyhow::Result<()> {
    println!(
        "AOS bench — AWS adapters (official SDK) against moto server, offline model and tools"
    );
    eprintln!("  starting moto server (installed once into its own virtualenv)…");
    let moto = aos_aws::emulator::Moto::start_default()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let b = rt.block_on(async {
        let sdk = aos_aws::emulator_sdk_config(moto.endpoint()).await;
        let aws = aos_aws::AwsBackend::new(
            aos_aws::AwsClients::new(&sdk),
            aos_aws::AwsSettings::default(),
            std::sync::Arc::new(aos_kernel::ports::SystemClock),
        );
        aos_aws::provision(&aws, &["primary", "weather", "finance"]).await?;
        bench::aws(aws, tasks, true).await
    })?;
    println!(
        "{} wakes of {} three-agent tasks in {:.2} s against the emulator ({:.0} wakes/s; moto's speed, not AWS's)",
        b.wakes,
        b.tasks,
        b.seconds,
        b.wakes as f64 / b.seconds.max(1e-9)
    );
    println!("AWS calls per wake, the wake's own path:");
    for (op, n) in &b.wake_calls {
        println!("  {op:<34} {:>6.2}  ({n} in all)", b.per_wake(*n));
    }
    println!("AWS calls per wake, the trigger (Lambda's event source mapping on AWS):");
    for (op, n) in &b.trigger_calls {
        println!("  {op:<34} {:>6.2}  ({n} in all)", b.per_wake(*n));
    }
    let retries: Vec<String> = b
        .retries
        .iter()
        .map(|(op, n)| format!("{op} {n}"))
        .collect();
    println!(
        "SDK retries: {}; records per batch: {:.1}",
        if retries.is_empty() {
            "none".to_string()
        } else {
            retries.join(", ")
        },
        b.records_per_batch
    );
    let items: Vec<String> = b
        .items
        .iter()
        .map(|(kind, (n, avg))| format!("{kind} {n} × {avg:.0} B"))
        .collect();
    println!(
        "items in the table (count × average size): {}",
        items.join(", ")
    );
    let (dynamo, sqs, lambda) = b.cost_per_million();
    println!(
        "request units per wake (from stored item sizes): {:.1} WRU, {:.1} RRU",
        b.wru_per_wake, b.rru_per_wake
    );
    println!(
        "cost per million wakes at us-east-1 on-demand prices, excluding the model: DynamoDB ${dynamo:.2} + SQS FIFO ${sqs:.2} + Lambda requests ${lambda:.2} = ${:.2}",
        dynamo + sqs + lambda
    );
    println!(
        "  (plus Lambda duration: at 128 MB arm64, each 100 ms of wake adds ${:.2} per million wakes)",
        1e6 * 0.125 * 0.1 * bench::prices::LAMBDA_GB_SECOND
    );
    Ok(())
}
