//! Build script: generates the C header with cbindgen and gives the shared library its SONAME.
//!
//! * The header is always generated into `$OUT_DIR/cbslot.h`; the checked-in `include/cbslot.h` is rewritten
//!   only when `CBSLOT_UPDATE_HEADER=1` is set (or when it does not exist yet). The header-drift test
//!   (`tests/header_drift.rs`, run by CTest) fails when the two differ, so a stale header never lands.
//! * Cargo sets no SONAME; we pass `-soname libcbslot.so.<major>` to the linker and create the
//!   `libcbslot.so.<major>` link beside the built library so programs linked against it run from the build tree.
//!   The library is also linked `-z nodelete` and `-Bsymbolic`. On Apple targets its install name is
//!   `@rpath/libcbslot.<major>.dylib` (what CMake installs it as).
//! * The cfgs that say which parts the target has (`platform_cfgs`).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=CBSLOT_UPDATE_HEADER");

    let header = generate_header(&root);
    fs::write(out_dir.join("cbslot.h"), &header).expect("write $OUT_DIR/cbslot.h");
    let checked_in = root.join("include/cbslot.h");
    let update = env::var_os("CBSLOT_UPDATE_HEADER").is_some_and(|v| v != "0") || !checked_in.exists();
    if update && fs::read(&checked_in).ok().as_deref() != Some(header.as_slice()) {
        fs::write(&checked_in, &header).expect("write include/cbslot.h");
    }

    platform_cfgs();

    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        let major = env::var("CARGO_PKG_VERSION_MAJOR").unwrap();
        let soname = format!("libcbslot.so.{major}");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
        // Never unloaded by dlclose: mapped trampolines jump into the library's code, and a thread-exit
        // destructor is registered with pthread.
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
        // The library's references to its own exported symbols bind to its own definitions: in particular
        // the GDB JIT interface's two names, which another JIT in the process may define too (gdb reads
        // one descriptor per loaded object).
        println!("cargo:rustc-cdylib-link-arg=-Wl,-Bsymbolic");
        // $OUT_DIR is <target-dir>/[<triple>/]<profile>/build/cbslot-<hash>/out
        if let Some(profile_dir) = out_dir.ancestors().nth(3) {
            soname_link(profile_dir, &soname);
        }
    }
    if env::var("CARGO_CFG_TARGET_VENDOR").as_deref() == Ok("apple") {
        // what CMake installs it as (programs find it through their rpath)
        let major = env::var("CARGO_PKG_VERSION_MAJOR").unwrap();
        println!("cargo:rustc-cdylib-link-arg=-Wl,-install_name,@rpath/libcbslot.{major}.dylib");
    }
}

/// What the target has, as cfgs the source tests (one place instead of long `cfg(all(...))` everywhere):
/// `cbslot_linux` (the Linux system calls: epoll, eventfd, futex, membarrier, memfd) and `cbslot_entries`
/// (callback trampolines: x86_64 or aarch64 Linux). `--cfg cbslot_force_unsupported` turns both off, so the
/// other platforms' code is built and tested on Linux. `CBSLOT_TARGET` names the target in error messages.
fn platform_cfgs() {
    println!("cargo::rustc-check-cfg=cfg(cbslot_linux)");
    println!("cargo::rustc-check-cfg=cfg(cbslot_entries)");
    let var = |k: &str| env::var(k).unwrap_or_default();
    let forced = env::var_os("CARGO_CFG_CBSLOT_FORCE_UNSUPPORTED").is_some();
    let linux = var("CARGO_CFG_TARGET_OS") == "linux" && !forced;
    if linux {
        println!("cargo::rustc-cfg=cbslot_linux");
        if matches!(var("CARGO_CFG_TARGET_ARCH").as_str(), "x86_64" | "aarch64") {
            println!("cargo::rustc-cfg=cbslot_entries");
        }
    }
    let suffix = if forced { " (built with cbslot_force_unsupported)" } else { "" };
    println!("cargo::rustc-env=CBSLOT_TARGET={}{suffix}", var("TARGET"));
}

fn generate_header(root: &Path) -> Vec<u8> {
    let mut config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("read cbindgen.toml");
    let v = |k: &str| env::var(k).unwrap();
    config.after_includes = Some(format!(
        "\n/** Version of these headers, `\"MAJOR.MINOR.PATCH\"` (the library's own is `cb_version()`). */\n\
         #define CBSLOT_VERSION \"{}\"\n\
         /** MAJOR of `CBSLOT_VERSION`; the shared library's soname is `libcbslot.so.MAJOR`. */\n\
         #define CBSLOT_VERSION_MAJOR {}\n\
         /** MINOR of `CBSLOT_VERSION`, as a number for `#if` tests. */\n\
         #define CBSLOT_VERSION_MINOR {}\n\
         /** PATCH of `CBSLOT_VERSION`, as a number for `#if` tests. */\n\
         #define CBSLOT_VERSION_PATCH {}\n",
        v("CARGO_PKG_VERSION"),
        v("CARGO_PKG_VERSION_MAJOR"),
        v("CARGO_PKG_VERSION_MINOR"),
        v("CARGO_PKG_VERSION_PATCH"),
    ));
    // cbindgen runs `cargo metadata`, which would take the flags cargo gives this script for the *target*
    // (CARGO_ENCODED_RUSTFLAGS) as the host's: flags such as -Zbranch-protection make the host's rustc fail.
    // SAFETY: the build script is single-threaded here.
    unsafe { env::remove_var("CARGO_ENCODED_RUSTFLAGS") };
    let mut header = Vec::new();
    cbindgen::Builder::new()
        .with_crate(root)
        .with_config(config)
        .generate()
        .expect("cbindgen failed to generate include/cbslot.h")
        .write(&mut header);
    header
}

fn soname_link(dir: &Path, soname: &str) {
    let link = dir.join(soname);
    if fs::read_link(&link).is_ok_and(|t| t == Path::new("libcbslot.so")) {
        return;
    }
    let _ = fs::remove_file(&link);
    #[cfg(unix)]
    std::os::unix::fs::symlink("libcbslot.so", &link).expect("create the soname link");
}
