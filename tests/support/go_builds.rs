//! Builds of the Go examples against other Go toolchains and library versions, for the tests
//! that cover what users run: several Go releases, stripped or not.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Build examples/grpc-echo against one grpc-go version with one Go toolchain, in a module
/// directory of its own (the example's go.mod pins the newest grpc-go).
pub fn grpc_echo(toolchain: &str, grpc: &str, stripped: bool) -> Result<PathBuf, String> {
    let example = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/grpc-echo"
    ));
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let module = tmp.join(format!("grpc-echo-module-{grpc}-{toolchain}"));
    std::fs::create_dir_all(&module).map_err(|e| e.to_string())?;
    std::fs::copy(example.join("main.go"), module.join("main.go")).map_err(|e| e.to_string())?;
    if !module.join("go.sum").exists() {
        std::fs::write(
            module.join("go.mod"),
            "module wirespan.dev/examples/grpc-echo\n\ngo 1.22\n",
        )
        .map_err(|e| e.to_string())?;
        let get = format!("google.golang.org/grpc@{grpc}");
        for args in [&["get", get.as_str()][..], &["mod", "tidy"]] {
            go(&module, toolchain, args)?;
        }
    }
    let out = tmp.join(format!(
        "grpc-echo-{grpc}-{toolchain}{}",
        if stripped { "-stripped" } else { "" }
    ));
    let out_arg = out.to_str().ok_or("non-UTF-8 path")?;
    if stripped {
        go(
            &module,
            toolchain,
            &["build", "-ldflags=-s -w", "-o", out_arg, "."],
        )?;
    } else {
        go(&module, toolchain, &["build", "-o", out_arg, "."])?;
    }
    Ok(out)
}

pub fn go(dir: &Path, toolchain: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new("go")
        .args(args)
        .current_dir(dir)
        .env("GOTOOLCHAIN", toolchain)
        .output()
        .map_err(|e| format!("cannot run go: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "go {} ({toolchain}) failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
