//! Symbols for crash dumps: a store of ELF files keyed by GNU build id, and
//! address symbolization for one ELF.
//!
//! A dump names the exact binaries it needs by build id (the kernel's and
//! every loaded extension's); the store keeps one copy of each, so a dump
//! can be diagnosed long after the binaries were rebuilt.

mod error;
mod store;
mod symbolizer;

pub use error::SymbolError;
pub use store::{
    Module, Richness, SymbolStore, build_id_of, build_id_of_loaded, initramfs_modules, is_build_id,
};
pub use symbolizer::{FunctionSymbol, Symbol, Symbolizer, function_symbols, source_path};
