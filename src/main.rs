fn main() {
    std::process::exit(qga_harness::internals::cli::main());
}
