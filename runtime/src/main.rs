//! `pgolf-rt`: evaluate, score, inspect and train parameter-golf models.

mod cli;

/// `pgolf-rt inspect A | head` ends quietly when the reader closes the pipe, as Unix tools
/// do, instead of panicking in `println!` (Rust ignores SIGPIPE by default).
fn die_quietly_on_broken_pipe() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: restores the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    die_quietly_on_broken_pipe();
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
