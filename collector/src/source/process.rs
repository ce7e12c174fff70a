//! Process lifecycle records → [`Exec`] and [`ProcessExit`]. A process-start record carries the
//! new program's argument and environment blocks (each cut at its cap) and its executable's
//! name, read in the kernel at exec: what the process's OpenTelemetry resource needs, even when
//! the process is gone before user space looks. The first exec layout (no blocks) still decodes,
//! so older recordings replay.

use wirespan_shared::{
    ExecEvent, PROCESS_ARGS_CAP, PROCESS_ENV_CAP, ProcessExitEvent, ProcessStartHeader,
};

use super::decode::{DecodeError, comm, read_struct};
use crate::event::{Exec, ExecImage, ProcessExit};
use crate::protocol::content::SECRET_FILL;

/// The first exec layout: who and when, nothing of the program.
pub(super) fn decode_exec(record: &[u8]) -> Result<Exec, DecodeError> {
    let raw: ExecEvent = read_struct(record)?;
    Ok(Exec {
        pid: raw.pid,
        comm: comm(&raw.comm),
        ts_ns: raw.ts_ns,
        image: None,
    })
}

/// A process-start record: the header, then `args_len` argument bytes and `env_len`
/// environment bytes.
pub(super) fn decode_start(record: &[u8]) -> Result<Exec, DecodeError> {
    let h: ProcessStartHeader = read_struct(record)?;
    let (args_len, env_len) = (h.args_len as usize, h.env_len as usize);
    let start = size_of::<ProcessStartHeader>();
    if args_len > PROCESS_ARGS_CAP
        || env_len > PROCESS_ENV_CAP
        || record.len() < start + args_len + env_len
    {
        return Err(DecodeError::Blocks {
            args_len: h.args_len,
            env_len: h.env_len,
        });
    }
    let args = record[start..start + args_len].to_vec();
    let env = record[start + args_len..start + args_len + env_len].to_vec();
    let exe_end = h.exe.iter().position(|&b| b == 0).unwrap_or(h.exe.len());
    Ok(Exec {
        pid: h.pid,
        comm: comm(&h.comm),
        ts_ns: h.ts_ns,
        image: Some(ExecImage {
            exe: String::from_utf8_lossy(&h.exe[..exe_end]).into_owned(),
            args,
            env,
            args_cut: h.args_size > h.args_len,
            env_cut: h.env_size > h.env_len,
        }),
    })
}

pub(super) fn decode_exit(record: &[u8]) -> Result<ProcessExit, DecodeError> {
    let raw: ProcessExitEvent = read_struct(record)?;
    Ok(ProcessExit {
        pid: raw.pid,
        ts_ns: raw.ts_ns,
    })
}

/// The environment variables whose values recordings keep: those the agent reads (a process's
/// service name and resource attributes). Environments hold passwords and tokens: every other
/// value is masked wherever raw records are kept.
pub const KEPT_ENV: [&str; 2] = ["OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"];

/// Mask in place the environment values of a raw process-start record but [`KEPT_ENV`]'s;
/// whether any was masked.
pub fn mask_start_record(record: &mut [u8]) -> bool {
    let Ok(h) = read_struct::<ProcessStartHeader>(record) else {
        return false;
    };
    let start = size_of::<ProcessStartHeader>() + h.args_len as usize;
    let end = start + (h.env_len as usize).min(PROCESS_ENV_CAP);
    record.get_mut(start..end).is_some_and(mask_environment)
}

/// Mask in place the values of a NUL-separated environment block but [`KEPT_ENV`]'s (each
/// value keeps its length: `NAME=****`); whether any was masked.
pub fn mask_environment(env: &mut [u8]) -> bool {
    let mut masked = false;
    for entry in env.split_mut(|b| *b == 0) {
        let Some(eq) = entry.iter().position(|b| *b == b'=') else {
            continue;
        };
        let (name, value) = entry.split_at_mut(eq + 1);
        let name = &name[..eq];
        if value.is_empty() || KEPT_ENV.iter().any(|k| k.as_bytes() == name) {
            continue;
        }
        value.fill(SECRET_FILL);
        masked = true;
    }
    masked
}

/// Test helpers: process records built the way the probe builds them.
#[cfg(test)]
pub(crate) mod raw {
    use wirespan_shared::{COMM_LEN, EVENT_PROCESS_START, PROCESS_EXE_LEN};

    use super::*;
    use crate::source::decode::raw::bytes_of;

    /// A process-start record of `pid` with these blocks; `env_size` is the whole environment's
    /// size (more than `env.len()` for a cut one).
    pub fn start(pid: u32, exe: &str, args: &[u8], env: &[u8], env_size: usize) -> Vec<u8> {
        let mut h = ProcessStartHeader {
            kind: EVENT_PROCESS_START,
            pid,
            ts_ns: 1_000,
            args_size: args.len() as u32,
            args_len: args.len() as u32,
            env_size: env_size as u32,
            env_len: env.len() as u32,
            comm: [0; COMM_LEN],
            exe: [0; PROCESS_EXE_LEN],
        };
        let name = exe.as_bytes();
        h.comm[..name.len().min(COMM_LEN - 1)]
            .copy_from_slice(&name[..name.len().min(COMM_LEN - 1)]);
        h.exe[..name.len()].copy_from_slice(name);
        let mut record = bytes_of(&h);
        record.extend_from_slice(args);
        record.extend_from_slice(env);
        record
    }
}

#[cfg(test)]
mod tests {
    use wirespan_shared::{COMM_LEN, EVENT_EXEC, EVENT_PROCESS_EXIT};

    use super::{raw::start, *};
    use crate::source::{Event, decode, decode::raw::bytes_of};

    #[test]
    fn decodes_a_process_start_with_its_blocks() {
        let record = start(
            42,
            "curl",
            b"curl\0-s\0",
            b"A=1\0OTEL_SERVICE_NAME=job3\0",
            27,
        );
        let Event::Exec(e) = decode(&record).unwrap() else {
            panic!("not exec")
        };
        assert_eq!((e.pid, e.comm.as_str(), e.ts_ns), (42, "curl", 1_000));
        let image = e.image.unwrap();
        assert_eq!(image.exe, "curl");
        assert_eq!(image.args, b"curl\0-s\0");
        assert_eq!(image.env, b"A=1\0OTEL_SERVICE_NAME=job3\0");
        assert!(!image.args_cut && !image.env_cut);
    }

    #[test]
    fn environment_values_are_masked_but_those_the_agent_reads() {
        let env = b"DB_PASSWORD=hunter2\0OTEL_SERVICE_NAME=job3\0EMPTY=\0PATH=/bin\0cut=ab";
        let mut record = start(42, "curl", b"curl\0-s\0", env, env.len());
        assert!(mask_start_record(&mut record));
        let Event::Exec(e) = decode(&record).unwrap() else {
            panic!("not exec")
        };
        let image = e.image.unwrap();
        assert_eq!(
            image.env,
            b"DB_PASSWORD=*******\0OTEL_SERVICE_NAME=job3\0EMPTY=\0PATH=****\0cut=**"
        );
        assert_eq!(image.args, b"curl\0-s\0", "arguments are kept");
    }

    #[test]
    fn a_block_longer_than_captured_is_marked_cut() {
        let record = start(42, "curl", b"curl\0", b"A=1\0B=", 40_000);
        let Event::Exec(e) = decode(&record).unwrap() else {
            panic!("not exec")
        };
        assert!(e.image.unwrap().env_cut);
    }

    #[test]
    fn blocks_beyond_the_record_or_the_caps_are_errors() {
        let mut record = start(42, "curl", b"curl\0", b"A=1\0", 4);
        record.truncate(record.len() - 1);
        assert_eq!(
            decode(&record),
            Err(DecodeError::Blocks {
                args_len: 5,
                env_len: 4
            })
        );
        let mut h: ProcessStartHeader = read_struct(&start(1, "x", b"", b"", 0)).unwrap();
        h.env_len = PROCESS_ENV_CAP as u32 + 1;
        let mut record = bytes_of(&h);
        record.resize(record.len() + PROCESS_ENV_CAP + 1, b'x');
        assert!(matches!(decode(&record), Err(DecodeError::Blocks { .. })));
        // Every prefix decodes without panicking.
        let full = start(42, "curl", b"curl\0", b"A=1\0", 4);
        for len in 0..full.len() {
            let _ = decode(&full[..len]);
        }
    }

    #[test]
    fn the_first_exec_layout_and_exits_decode() {
        let old = ExecEvent {
            kind: EVENT_EXEC,
            pid: 7,
            ts_ns: 5,
            comm: *b"job\0\0\0\0\0\0\0\0\0\0\0\0\0",
        };
        assert_eq!(
            decode(&bytes_of(&old)),
            Ok(Event::Exec(Exec {
                pid: 7,
                comm: "job".into(),
                ts_ns: 5,
                image: None
            }))
        );
        let exit = ProcessExitEvent {
            kind: EVENT_PROCESS_EXIT,
            pid: 7,
            ts_ns: 9,
        };
        assert_eq!(
            decode(&bytes_of(&exit)),
            Ok(Event::Exit(ProcessExit { pid: 7, ts_ns: 9 }))
        );
        assert_eq!(COMM_LEN, 16);
    }
}
