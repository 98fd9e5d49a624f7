fn main() {
    eprintln!("pipeline: not built yet");
    std::process::exit(2);
}
