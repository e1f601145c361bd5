//! The `ffnskip` command-line tool: `main` → `run(args)` → exit code.

mod cli;

use clap::Parser;

fn main() {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("ffnskip: internal error: {info}");
    }));
    let args = match cli::Args::try_parse() {
        Ok(args) => args,
        Err(err) if !err.use_stderr() => {
            // --help and --version.
            let _ = err.print();
            std::process::exit(0);
        }
        Err(err) => {
            // clap's message spans several lines; keep the reason, on one line.
            let msg = err.to_string();
            let reason: Vec<&str> = msg
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("ffnskip: {} (see --help)", reason.join(" "));
            std::process::exit(2);
        }
    };
    let code = match cli::run(args) {
        Ok(()) => 0,
        Err(err) => {
            let chain: Vec<String> = err.chain().map(|e| e.to_string()).collect();
            eprintln!("ffnskip: error: {}", chain.join(": "));
            1
        }
    };
    std::process::exit(code);
}
