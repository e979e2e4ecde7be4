//! The `dyeing-gateway` binary: parses the command line and hands over to `cli`.

fn main() {
    // One malloc arena for all threads: the gateway allocates little per poll, and glibc's
    // default (a pool per thread, up to 8 per core) costs resident memory for nothing.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called before any other thread exists; mallopt only changes a tuning value.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    std::process::exit(dyeing_gateway::cli::main());
}
