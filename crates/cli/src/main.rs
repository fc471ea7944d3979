fn main() {
    println!("{}", lazarus_image::KERNEL_ELF.len());
}
