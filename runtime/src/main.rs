//! `pgolf-rt`: evaluate, score, inspect and train parameter-golf models.

mod cli;

fn main() {
    // Forward passes reuse freed activation memory instead of faulting in fresh pages.
    pgolf_rt::alloc::retain_freed_memory();
    if let Err(e) = cli::run() {
        // The context chain, without repeating a cause that a message already quotes
        // (`Error::Io` prints "path: cause" and also exposes the cause as its source).
        let mut msg = e.to_string();
        for cause in e.chain().skip(1) {
            let c = cause.to_string();
            if !msg.contains(&c) {
                msg = format!("{msg}: {c}");
            }
        }
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
