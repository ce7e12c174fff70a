//! Rebuild the probes when the bpf-linker binary changes: it is an undeclared dependency of the
//! bpfel target (cargo cannot express it; rust-lang/cargo#12385).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo::rerun-if-changed={}", linker.display());
    }
}
