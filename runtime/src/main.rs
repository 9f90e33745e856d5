//! `pgolf-rt`: evaluate, score and inspect parameter-golf models.

mod cli;

fn main() {
    if let Err(e) = cli::run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
