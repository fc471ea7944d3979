//! Links the repair program with `repair.ld`: a static, non-PIE executable
//! at `PROGRAM_VA` inside the repair image.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-T{dir}/repair.ld");
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=-znorelro");
    println!("cargo:rerun-if-changed=repair.ld");
}
