use srlm::cli::{BenchCommand, CheckpointsCommand, Cli, Command, DataCommand, EvalCommand, TrainCommand};

fn main() -> anyhow::Result<()> {
    // OpenBLAS (the trainer's matrix products, where installed: train::fast::blas) keeps
    // its threads spinning for a while after each call, taking the cores from the rayon
    // kernels that run between products; 2^4 cycles instead of its default made a DPO
    // step 6–8 % faster on 2 cores. It reads the variable when loaded, so it is set here,
    // before any other thread exists; a value the user gave is kept.
    if std::env::var_os("OPENBLAS_THREAD_TIMEOUT").is_none() {
        std::env::set_var("OPENBLAS_THREAD_TIMEOUT", "4");
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let (cli, given) = Cli::parse_with_matches();
    match cli.command {
        Command::Serve(args) => {
            srlm::telemetry::init(cli.log_format);
            srlm::serve::run(args).await
        }
        Command::Openapi(args) => {
            let json = serde_json::to_string_pretty(&srlm::api::openapi())? + "\n";
            match args.out {
                Some(path) => std::fs::write(&path, json)?,
                None => print!("{json}"),
            }
            Ok(())
        }
        Command::Bench(bench) => {
            srlm::telemetry::init(cli.log_format);
            match bench {
                BenchCommand::Chat(args) => srlm::bench::chat::run(args).await,
                BenchCommand::Generate(args) => srlm::bench::generate::run(args).await,
                BenchCommand::Train(args) => srlm::bench::train::run(args).await,
            }
        }
        Command::SelfInstruct(args) => {
            srlm::telemetry::init(cli.log_format);
            srlm::selfinstruct::run(args.into()).await
        }
        Command::Loop(args) => {
            srlm::telemetry::init(cli.log_format);
            srlm::selfloop::run(args.with_preset(&given).config()).await
        }
        Command::Eval(eval) => {
            srlm::telemetry::init(cli.log_format);
            match eval {
                EvalCommand::Rm(args) => srlm::eval::rm::run(args.into()).await,
                EvalCommand::H2h(args) => srlm::eval::h2h::run(args.into()).await,
                EvalCommand::Ifeval(args) => srlm::eval::ifeval::run(args.into()).await,
                EvalCommand::Reviews(args) => srlm::eval::reviews::run(args.into()).await,
                EvalCommand::ExportAlpaca(args) => srlm::eval::alpaca::run(args.into()).await,
                EvalCommand::Chart(args) => srlm::eval::chart_command(args.into()).await,
                EvalCommand::Gate(args) => {
                    srlm::eval::gate::run(&args.database_url, args.parent, args.child, &args.gate.settings(args.concurrency)).await
                }
            }
        }
        Command::Data(data) => {
            srlm::telemetry::init(cli.log_format);
            match data {
                DataCommand::ImportOasst(args) => srlm::data::oasst::run(args.into()),
                DataCommand::ExportPairs(args) => srlm::data::pairs::run(args.into()).await,
                DataCommand::MakeIfeval(args) => srlm::data::ifeval::run(args.into()),
                DataCommand::MakeJudgePairs(args) => srlm::data::ifeval::make_judge_pairs(args.into()).await,
                DataCommand::MakeEft(args) => srlm::data::eft::run(args.into()).await,
            }
        }
        Command::Checkpoints(CheckpointsCommand::Import(args)) => {
            srlm::telemetry::init(cli.log_format);
            srlm::checkpoint::import::run(args.into()).await
        }
        Command::Train(train) => {
            srlm::telemetry::init(cli.log_format);
            match train {
                TrainCommand::Dpo(args) => {
                    let (job, watch) = args.job();
                    srlm::train::run::dpo(job, watch).await
                }
                TrainCommand::Sft(args) => srlm::train::run::sft(args.job()).await,
            }
        }
    }
}
