fn main() {
    std::process::exit(qga_harness::cli::main());
}
