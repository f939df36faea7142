//! The `skiff` binary: parse arguments, set up logging, run the chosen component.
//! Bad configuration exits with 64 (EX_USAGE) before anything is bound.

use clap::Parser;
use skiff::cmd::{self, Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // `skiff trace` prints to a terminal: only warnings unless asked.
    let level = match (&cli.command, cli.log.as_str()) {
        (Command::Trace(_), "info") => "warn",
        (_, l) => l,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let result = match cli.command {
        Command::Apiserver(args) => match args.resolve() {
            Err(e) => {
                eprintln!("skiff apiserver: {e}");
                return std::process::ExitCode::from(64);
            }
            Ok(config) if args.print_config => config
                .render(&cmd::apiserver::SECTIONS, &cmd::apiserver::SECRETS)
                .map(|s| print!("{s}"))
                .map_err(Into::into),
            Ok(config) => {
                cmd::title::set("skiff-apiserver", &[]);
                skiff::apiserver::run::run(config)
            }
        },
        Command::Up(args) => cmd::up::run(args),
        Command::Scheduler(args) => cmd::components::run_scheduler(args),
        Command::ControllerManager(args) => cmd::components::run_controller_manager(args),
        Command::Kubelet(args) => cmd::components::run_kubelet(args),
        Command::Kubeconfig(args) => cmd::kubeconfig::run(args),
        Command::Init(args) => cmd::init::run(args),
        Command::NatsConfig(args) => cmd::natsconf::run(args),
        Command::NatsRun(args) => cmd::natsconf::run_nats(args),
        Command::Trace(args) => cmd::trace::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Bad configuration (a flag, variable or file value out of range): EX_USAGE.
        Err(e) if e.downcast_ref::<skiff::config::ConfigError>().is_some() => {
            eprintln!("skiff: {e:#}");
            std::process::ExitCode::from(64)
        }
        Err(e) => {
            eprintln!("skiff: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
