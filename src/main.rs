//! `coach-api`: the Lambda function when `AWS_LAMBDA_RUNTIME_API` is set, otherwise the
//! operator's commands (README, "Configuration" and "Deploy").

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coach_api::config::Config;
use coach_api::prompts::{pack, PromptVars, Prompts};
use coach_api::state::{AppState, Overrides, Warm};
use coach_api::store::Store;
use coach_api::{api, limits, llm, seed};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "coach-api", version, about = "Golf-coaching chat backend")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP on 127.0.0.1:$PORT (default 3000).
    Serve,
    /// Create the tables on DYNAMODB_ENDPOINT (or AWS) if they do not exist.
    Migrate,
    /// Load demo golfers, profiles and swing analyses.
    Seed {
        /// Also load this many more golfers (golfer-0001, …) built on the demos, for load tests.
        #[arg(long, default_value_t = 0)]
        golfers: usize,
        /// Also load the golfers of this file (as `src/seed/demos.json`; e.g. evals/personas.json).
        #[arg(long)]
        golfers_file: Option<PathBuf>,
    },
    /// Tools for prompt authors.
    Prompt {
        #[command(subcommand)]
        command: PromptCommand,
    },
    /// The model table against the provider.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Compare the model table with the provider's `GET /models`; fails when the configured
    /// model or its replacement is missing or shuts down within 30 days.
    Check,
}

#[derive(Subcommand)]
enum PromptCommand {
    /// Render the prompt for a context file and show each message's tokens against the token limit.
    Preview {
        file: PathBuf,
        /// A prompt variant (`prompts/variants/NAME/`) instead of the base templates.
        #[arg(long)]
        variant: Option<String>,
    },
    /// Print the prompt version (templates and model row) every turn is stamped with.
    Version {
        /// A prompt variant instead of the base templates.
        #[arg(long)]
        variant: Option<String>,
    },
    /// Print the JSON Schema of the variables templates receive.
    Schema,
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_tracing(config: &Config) {
    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if config.log_json {
        builder.json().flatten_event(true).with_current_span(false).init();
    } else {
        builder.compact().init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "coach-api: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_tracing(&config);
    // One thread by default: a task woken by a socket runs where it was woken, with no
    // hand-over between threads (bench/README.md measured what that costs).
    let runtime = match config.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    };
    match runtime {
        Ok(runtime) => runtime.block_on(run(cli, config)),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "coach-api: no async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, config: Config) -> ExitCode {
    let result = match (cli.command, config.in_lambda) {
        (None, true) => run_lambda(config).await,
        (None, false) => Err("no command given: see `coach-api --help`".into()),
        (Some(Command::Serve), _) => serve(config).await,
        (Some(Command::Migrate), _) => migrate(config).await,
        (Some(Command::Seed { golfers, golfers_file }), _) => seed_demo(config, golfers, golfers_file.as_deref()).await,
        (Some(Command::Prompt { command: PromptCommand::Preview { file, variant } }), _) => preview(config, &file, variant.as_deref()),
        (Some(Command::Prompt { command: PromptCommand::Version { variant } }), _) => prompt_version(config, variant.as_deref()),
        (Some(Command::Prompt { command: PromptCommand::Schema }), _) => prompt_schema(),
        (Some(Command::Models { command: ModelsCommand::Check }), _) => check_models(config).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "coach-api failed");
            let _ = writeln!(std::io::stderr(), "coach-api: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_lambda(config: Config) -> Result<(), Failure> {
    let streaming = config.lambda_streaming;
    let state = AppState::build(config, Warm::Now, Overrides::default()).await?;
    let served = match streaming {
        // The streamed route's function: every response goes out as it is written.
        true => lambda_http::run_with_streaming_response(api::lambda_service(state)).await,
        false => lambda_http::run(api::lambda_service(state)).await,
    };
    served.map_err(|e| e.to_string().into())
}

async fn serve(config: Config) -> Result<(), Failure> {
    let addr = SocketAddr::from(([127, 0, 0, 1], config.port));
    let offline = config.model.is_offline();
    let overrides = Overrides { clock: config.clock(), ..Overrides::default() };
    let state = AppState::build(config, Warm::Background, overrides).await?;
    // No Nagle delay: a streamed answer's events are small writes that must leave at once
    // (with it, each waited for the client's delayed ACK, 40 ms on Linux).
    let listener = axum::serve::ListenerExt::tap_io(tokio::net::TcpListener::bind(addr).await?, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "TCP_NODELAY not set");
        }
    });
    tracing::info!(%addr, offline, "serving POST {} and {}", api::CHAT_PATH, api::CHAT_STREAM_PATH);
    axum::serve(listener, api::router(state).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn migrate(config: Config) -> Result<(), Failure> {
    let store = Store::connect(&config).await;
    let created = store.create_tables().await?;
    tracing::info!(?created, "tables ready");
    Ok(())
}

async fn seed_demo(config: Config, extra: usize, file: Option<&Path>) -> Result<(), Failure> {
    let store = Store::connect(&config).await;
    let more = match file {
        Some(f) => seed::golfers(&std::fs::read_to_string(f)?)?,
        None => vec![],
    };
    let n = seed::seed(&store, extra, &more, config.clock().now()).await?;
    tracing::info!(golfers = n, "demo data loaded: demo-alice, demo-ben, demo-chloe{}", if extra > 0 { ", golfer-0001, …" } else { "" });
    Ok(())
}

/// The templates a command works on: the base's, or a variant's.
fn templates(config: &Config, variant: Option<&str>) -> Result<Prompts, Failure> {
    Ok(match variant {
        Some(name) => Prompts::variant(name, config.prompts_dir.as_deref())?.prompts,
        None => Prompts::load(config.prompts_dir.as_deref())?,
    })
}

/// The model row a variant names, or else the configured one.
fn model_row(config: &Config, variant: Option<&str>) -> Result<llm::table::ModelSpec, Failure> {
    Ok(match variant.map(|v| Prompts::variant(v, config.prompts_dir.as_deref())).transpose()?.and_then(|v| v.model) {
        Some(row) => llm::table::spec(&row)?,
        None => config.model.spec.clone(),
    })
}

fn prompt_version(config: Config, variant: Option<&str>) -> Result<(), Failure> {
    let prompts = templates(&config, variant)?;
    let model = model_row(&config, variant)?;
    writeln!(std::io::stdout().lock(), "{}", coach_api::prompts::prompt_version(prompts.hash(), &model.asked()))?;
    Ok(())
}

fn preview(config: Config, file: &Path, variant: Option<&str>) -> Result<(), Failure> {
    let prompts = templates(&config, variant)?;
    let model = model_row(&config, variant)?;
    let text = std::fs::read_to_string(file)?;
    let vars: PromptVars = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let limit = config.limits.token_limit_per_request as usize;
    let reply = config.limits.max_reply_tokens as usize;
    let schema_tokens = llm::response_format_tokens();
    let token_limit = model.prompt_token_limit(limits::prompt_token_limit(&config.limits));
    let packed = pack(&prompts, &vars, token_limit)?;
    let mut out = std::io::stdout().lock();
    for (i, m) in packed.messages.iter().enumerate() {
        let tokens = coach_api::tokens::count_chat([(m.role.as_str(), m.content.as_str())]) - coach_api::tokens::REPLY_PRIMING;
        writeln!(out, "── message {} · {} · {} tokens ──", i + 1, m.role.as_str(), tokens)?;
        writeln!(out, "{}\n", m.content)?;
    }
    let schema = coach_api::schemas::get()?.coach_reply_for_model.clone();
    writeln!(out, "── structured output (response_format json_schema, strict) · {schema_tokens} tokens ──")?;
    writeln!(out, "{}\n", serde_json::to_string_pretty(&schema)?)?;
    writeln!(out, "token limit per request   {limit}")?;
    writeln!(out, "reply (max_tokens)        {reply}")?;
    writeln!(out, "structured-output schema  {schema_tokens}")?;
    writeln!(out, "prompt token limit        {token_limit}")?;
    writeln!(out, "prompt tokens             {} (incl. {} of chat framing)", packed.prompt_tokens, coach_api::tokens::REPLY_PRIMING)?;
    writeln!(out, "tokens left               {}", token_limit.saturating_sub(packed.prompt_tokens))?;
    writeln!(out, "history turns dropped     {}", packed.dropped_turns)?;
    writeln!(out, "detail                    {:?}", packed.detail)?;
    Ok(())
}

async fn check_models(config: Config) -> Result<(), Failure> {
    let today = config.clock().now().date_naive();
    let report = llm::check::run(&config.model, today).await?;
    std::io::stdout().lock().write_all(report.table.as_bytes())?;
    match report.ok {
        true => Ok(()),
        false => Err(format!("{} or its replacement is missing or shuts down within 30 days", config.model.model).into()),
    }
}

fn prompt_schema() -> Result<(), Failure> {
    let schema = schemars::schema_for!(PromptVars);
    writeln!(std::io::stdout().lock(), "{}", serde_json::to_string_pretty(&schema)?)?;
    Ok(())
}
