//! Links every user program with `user.ld`: a static, non-PIE executable
//! at `USER_IMAGE_BASE` with one writable segment.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-T{dir}/user.ld");
    println!("cargo:rustc-link-arg-bins=--no-pie");
    // Without this lld splits .data (which holds .data.rel.ro) and .bss
    // into two LOAD segments sharing a page; one RW segment is simpler for
    // the kernel's loader.
    println!("cargo:rustc-link-arg-bins=-znorelro");
    println!("cargo:rerun-if-changed=user.ld");
}
