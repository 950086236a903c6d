//! Each agent's binary links its own agent's tools and no other's: the weather
//! function carries no finance code and the reverse, and the functions that run no
//! agent (api, scheduler, sweep) carry no tool at all. Checked in the symbol table of
//! the built binaries (ELF, so Linux only), where code the linker dropped leaves no
//! name.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

/// The bytes of the binary's `.strtab` section: the names of its symbols.
fn symbol_names(path: &str) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    let mut read_at = |offset: u64, len: usize| -> Vec<u8> {
        let mut buf = vec![0; len];
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.read_exact(&mut buf).unwrap();
        buf
    };
    let header = read_at(0, 64);
    assert_eq!(&header[..4], b"\x7fELF", "{path} is not an ELF file");
    assert_eq!(
        (header[4], header[5]),
        (2, 1),
        "64-bit little-endian expected"
    );
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let (shoff, shentsize, shnum, shstrndx) = (
        u64_at(&header, 0x28),
        u16_at(&header, 0x3a),
        u16_at(&header, 0x3c),
        u16_at(&header, 0x3e),
    );
    let sections = read_at(shoff, shentsize * shnum);
    let section = |i: usize| &sections[i * shentsize..(i + 1) * shentsize];
    let shstr = section(shstrndx);
    let names = read_at(u64_at(shstr, 0x18), u64_at(shstr, 0x20) as usize);
    let strtab = (0..shnum)
        .map(section)
        .find(|s| {
            let name = &names[u32_at(s, 0)..];
            name.starts_with(b".strtab\0")
        })
        .expect("the binary has a symbol table (not stripped)");
    read_at(u64_at(strtab, 0x18), u64_at(strtab, 0x20) as usize)
}

fn links(names: &str, what: &str) -> bool {
    names.contains(what)
}

#[test]
fn each_binary_links_only_its_own_agents_tools() {
    let tools = [
        "WeatherTool",
        "CurrencyTool",
        "CalculatorTool",
        "InvoiceTool",
        "PaymentTool",
        "HttpGetTool",
    ];
    let cases = [
        (env!("CARGO_BIN_EXE_primary"), &[][..]),
        (env!("CARGO_BIN_EXE_weather"), &["WeatherTool"][..]),
        (
            env!("CARGO_BIN_EXE_finance"),
            &[
                "CurrencyTool",
                "CalculatorTool",
                "InvoiceTool",
                "PaymentTool",
            ][..],
        ),
        (env!("CARGO_BIN_EXE_api"), &[][..]),
        (env!("CARGO_BIN_EXE_scheduler"), &[][..]),
        (env!("CARGO_BIN_EXE_sweep"), &[][..]),
    ];
    for (path, own) in cases {
        let names = String::from_utf8_lossy(&symbol_names(path)).into_owned();
        // The kernel is linked into every one: the check sees real symbols.
        assert!(
            links(&names, "aos_kernel"),
            "{path}: no kernel symbols found"
        );
        for tool in tools {
            assert_eq!(
                links(&names, tool),
                own.contains(&tool),
                "{path}: {tool} linked: {}",
                links(&names, tool)
            );
        }
    }
}
