fn main() -> std::process::ExitCode {
    zest::cli::run()
}
