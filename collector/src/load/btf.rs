//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): just enough to find the byte
//! offset of a struct member, looking through anonymous unions and structs.
//!
//! aya's `Btf` keeps its types private, and the probes need offsets as load-time constants
//! (`SockCommonOffsets`), so wirespan reads them itself. Format: linux/Documentation/bpf/btf.rst.

use std::{collections::HashMap, path::Path};

use wirespan_shared::{FdOffsets, ProcOffsets, SockCommonOffsets};

/// Where the running kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;
const KIND_MAX: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "cannot read BTF from {path}: {source} (wirespan needs a kernel built with CONFIG_DEBUG_INFO_BTF)"
    )]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("malformed BTF: {what} at byte {at}")]
    Malformed { what: &'static str, at: usize },
    #[error("BTF has no struct `{name}`")]
    NoStruct { name: String },
    #[error("BTF struct `{strukt}` has no member `{member}`")]
    NoMember { strukt: String, member: String },
    #[error("BTF member `{strukt}.{member}` is a bitfield; its byte offset is not usable")]
    Bitfield { strukt: String, member: String },
}

/// One type of the BTF type section, with the members of structs and unions.
#[derive(Debug, Clone)]
struct BtfType {
    kind: u32,
    name_off: u32,
    /// For modifiers and typedefs, the type they refer to.
    type_ref: u32,
    members: Vec<Member>,
}

#[derive(Debug, Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
    bitfield_size: u32,
}

/// Parsed BTF: types indexed by id (id 0 is `void`) and the string section.
#[derive(Debug)]
pub struct Btf {
    types: Vec<BtfType>,
    strings: Vec<u8>,
    structs_by_name: HashMap<String, u32>,
}

fn u16_at(data: &[u8], at: usize) -> Result<u16, BtfError> {
    data.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(BtfError::Malformed {
            what: "truncated",
            at,
        })
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed {
            what: "truncated",
            at,
        })
}

impl Btf {
    /// Read the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parse a little-endian BTF blob (the only byte order of the kernels wirespan runs on).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if u16_at(data, 0)? != BTF_MAGIC {
            return Err(BtfError::Malformed {
                what: "bad magic (not little-endian BTF)",
                at: 0,
            });
        }
        let hdr_len = u32_at(data, 4)? as usize;
        if hdr_len < HEADER_LEN {
            return Err(BtfError::Malformed {
                what: "header too short",
                at: 4,
            });
        }
        let type_off = hdr_len + u32_at(data, 8)? as usize;
        let type_end = type_off + u32_at(data, 12)? as usize;
        let str_off = hdr_len + u32_at(data, 16)? as usize;
        let str_end = str_off + u32_at(data, 20)? as usize;
        let strings = data
            .get(str_off..str_end)
            .ok_or(BtfError::Malformed {
                what: "string section out of bounds",
                at: str_off,
            })?
            .to_vec();
        if type_end > data.len() {
            return Err(BtfError::Malformed {
                what: "type section out of bounds",
                at: type_off,
            });
        }

        let void = BtfType {
            kind: 0,
            name_off: 0,
            type_ref: 0,
            members: Vec::new(),
        };
        let mut types = vec![void];
        let mut at = type_off;
        while at < type_end {
            let (ty, next) = parse_type(data, at)?;
            types.push(ty);
            at = next;
        }
        let mut btf = Self {
            types,
            strings,
            structs_by_name: HashMap::new(),
        };
        for (id, ty) in btf.types.iter().enumerate() {
            if ty.kind == KIND_STRUCT && ty.name_off != 0 {
                let name = btf.name(ty.name_off).to_owned();
                // Keep the first definition; duplicates of a name are forward-compatible copies.
                btf.structs_by_name.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let tail = self.strings.get(off as usize..).unwrap_or_default();
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).unwrap_or("")
    }

    /// Follow typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.type_ref;
                }
                _ => break,
            }
        }
        id
    }

    /// Byte offset of `member` in `struct strukt`, searching anonymous structs and unions too.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .structs_by_name
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct {
                name: strukt.to_owned(),
            })?;
        let no_member = || BtfError::NoMember {
            strukt: strukt.to_owned(),
            member: member.to_owned(),
        };
        let found = self.find_member_bits(id, member, 0).ok_or_else(no_member)?;
        match found {
            (bits, 0) if bits % 8 == 0 => Ok(bits / 8),
            _ => Err(BtfError::Bitfield {
                strukt: strukt.to_owned(),
                member: member.to_owned(),
            }),
        }
    }

    /// (bit offset, bitfield size) of `member` within type `id`, plus `base` bits.
    fn find_member_bits(&self, id: u32, member: &str, base: u32) -> Option<(u32, u32)> {
        let ty = self.types.get(id as usize)?;
        for m in &ty.members {
            if m.name_off != 0 && self.name(m.name_off) == member {
                return Some((base + m.bit_offset, m.bitfield_size));
            }
        }
        for m in ty.members.iter().filter(|m| m.name_off == 0) {
            let inner = self.resolve(m.type_id);
            let kind = self.types.get(inner as usize).map(|t| t.kind);
            if matches!(kind, Some(KIND_STRUCT | KIND_UNION))
                && let Some(hit) = self.find_member_bits(inner, member, base + m.bit_offset)
            {
                return Some(hit);
            }
        }
        None
    }
}

/// Parse the type at `at`; returns it and where the next one starts.
fn parse_type(data: &[u8], at: usize) -> Result<(BtfType, usize), BtfError> {
    let name_off = u32_at(data, at)?;
    let info = u32_at(data, at + 4)?;
    let size_or_type = u32_at(data, at + 8)?;
    let vlen = (info & 0xffff) as usize;
    let kind = (info >> 24) & 0x1f;
    let kind_flag = info >> 31 == 1;
    let body = at + 12;
    let mut ty = BtfType {
        kind,
        name_off,
        type_ref: size_or_type,
        members: Vec::new(),
    };
    let extra = match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION => {
            for i in 0..vlen {
                let m = body + i * 12;
                let raw_offset = u32_at(data, m + 8)?;
                let (bit_offset, bitfield_size) = if kind_flag {
                    (raw_offset & 0x00ff_ffff, raw_offset >> 24)
                } else {
                    (raw_offset, 0)
                };
                ty.members.push(Member {
                    name_off: u32_at(data, m)?,
                    type_id: u32_at(data, m + 4)?,
                    bit_offset,
                    bitfield_size,
                });
            }
            vlen * 12
        }
        KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
        KIND_DATASEC | KIND_ENUM64 => vlen * 12,
        k if k <= KIND_MAX => 0,
        _ => {
            return Err(BtfError::Malformed {
                what: "unknown type kind",
                at,
            });
        }
    };
    Ok((ty, body + extra))
}

/// The `struct sock_common` offsets the connect probes read, from this kernel's BTF.
pub fn sock_common_offsets(btf: &Btf) -> Result<SockCommonOffsets, BtfError> {
    let off = |member: &str| btf.member_offset("sock_common", member);
    Ok(SockCommonOffsets {
        skc_daddr: off("skc_daddr")?,
        skc_rcv_saddr: off("skc_rcv_saddr")?,
        skc_dport: off("skc_dport")?,
        skc_num: off("skc_num")?,
        skc_family: off("skc_family")?,
        skc_v6_daddr: off("skc_v6_daddr")?,
        skc_v6_rcv_saddr: off("skc_v6_rcv_saddr")?,
        pad0: 0,
    })
}

/// The offsets along fd → sock and of the TCP sequence numbers, from this kernel's BTF.
pub fn fd_offsets(btf: &Btf) -> Result<FdOffsets, BtfError> {
    Ok(FdOffsets {
        task_files: btf.member_offset("task_struct", "files")?,
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdtable_max_fds: btf.member_offset("fdtable", "max_fds")?,
        fdtable_fd: btf.member_offset("fdtable", "fd")?,
        file_private_data: btf.member_offset("file", "private_data")?,
        file_f_inode: btf.member_offset("file", "f_inode")?,
        inode_i_mode: btf.member_offset("inode", "i_mode")?,
        socket_sk: btf.member_offset("socket", "sk")?,
        sock_protocol: btf.member_offset("sock", "sk_protocol")?,
        sock_type: btf.member_offset("sock", "sk_type")?,
        tcp_write_seq: btf.member_offset("tcp_sock", "write_seq")?,
        tcp_copied_seq: btf.member_offset("tcp_sock", "copied_seq")?,
        task_fsbase: btf.member_offset("task_struct", "thread")?
            + btf.member_offset("thread_struct", "fsbase")?,
        sock_err: btf.member_offset("sock", "sk_err")?,
    })
}

/// The offsets the process-start probe follows (task → mm → argument and environment bounds,
/// mm → exe file → dentry name), from this kernel's BTF.
pub fn proc_offsets(btf: &Btf) -> Result<ProcOffsets, BtfError> {
    let mm = |member: &str| btf.member_offset("mm_struct", member);
    Ok(ProcOffsets {
        task_mm: btf.member_offset("task_struct", "mm")?,
        mm_arg_start: mm("arg_start")?,
        mm_arg_end: mm("arg_end")?,
        mm_env_start: mm("env_start")?,
        mm_env_end: mm("env_end")?,
        mm_exe_file: mm("exe_file")?,
        file_path_dentry: btf.member_offset("file", "f_path")?
            + btf.member_offset("path", "dentry")?,
        dentry_name: btf.member_offset("dentry", "d_name")? + btf.member_offset("qstr", "name")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_foreign_and_truncated_input() {
        assert!(matches!(Btf::parse(b""), Err(BtfError::Malformed { .. })));
        assert!(matches!(
            Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0]),
            Err(BtfError::Malformed { .. })
        ));
        let mut header = vec![0x9f, 0xeb, 1, 0];
        for field in [24u32, 0, 1000, 0, 0] {
            header.extend_from_slice(&field.to_le_bytes());
        }
        assert!(matches!(
            Btf::parse(&header),
            Err(BtfError::Malformed { .. })
        ));
    }

    #[test]
    fn finds_members_through_anonymous_unions() {
        // struct outer { int a; union { int b; struct { int c; int d; }; }; }
        let mut strings = b"\0int\0outer\0a\0b\0c\0d\0".to_vec();
        strings.push(0);
        let name = |s: &str| {
            let needle = format!("\0{s}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        push(&[name("int"), KIND_INT << 24, 4, 32]); // [1] int
        push(&[
            0,
            (KIND_STRUCT << 24) | 2,
            8,
            name("c"),
            1,
            0,
            name("d"),
            1,
            32,
        ]); // [2]
        push(&[0, (KIND_UNION << 24) | 2, 8, name("b"), 1, 0, 0, 2, 0]); // [3]
        push(&[
            name("outer"),
            (KIND_STRUCT << 24) | 2,
            12,
            name("a"),
            1,
            0,
            0,
            3,
            32,
        ]); // [4]
        let mut blob = vec![0x9f, 0xeb, 1, 0];
        for field in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&field.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(&strings);
        let btf = Btf::parse(&blob).unwrap();
        assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "b").unwrap(), 4);
        assert_eq!(btf.member_offset("outer", "d").unwrap(), 8);
        assert!(matches!(
            btf.member_offset("outer", "e"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("inner", "a"),
            Err(BtfError::NoStruct { .. })
        ));
    }
}

/// Checks against the running kernel, with bpftool's reading of the same BTF as a second source.
#[cfg(test)]
mod kernel_tests {
    use std::{collections::HashMap, process::Command};

    use super::*;
    use crate::testing::cannot_run;

    /// bpftool's raw dump: type id → (kind, referenced type, members as (name, type, bit offset)).
    type RawDump = HashMap<u32, (String, u32, Vec<(String, u32, u32)>)>;

    fn bpftool_raw_dump() -> Option<RawDump> {
        let out = Command::new("bpftool")
            .args(["btf", "dump", "file", VMLINUX_BTF, "format", "raw"])
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        let field = |line: &str, key: &str| -> u32 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                // Values may carry punctuation (`type_id=12,`): take the leading digits.
                .map_or(0, |v| {
                    let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse().unwrap()
                })
        };
        let mut dump = RawDump::new();
        let mut current = 0;
        for line in String::from_utf8(out.stdout).ok()?.lines() {
            if let Some(rest) = line.strip_prefix('[') {
                let (id, rest) = rest.split_once("] ").unwrap();
                current = id.parse().unwrap();
                let kind = rest.split_whitespace().next().unwrap().to_owned();
                let name = rest.split('\'').nth(1).unwrap_or("").to_owned();
                dump.insert(
                    current,
                    (
                        format!("{kind} {name}"),
                        field(line, "type_id="),
                        Vec::new(),
                    ),
                );
            } else if line.starts_with('\t') && line.contains("bits_offset=") {
                let name = line.split('\'').nth(1).unwrap().to_owned();
                let member = (name, field(line, "type_id="), field(line, "bits_offset="));
                dump.get_mut(&current).unwrap().2.push(member);
            }
        }
        Some(dump)
    }

    fn bpftool_offset(dump: &RawDump, id: u32, member: &str) -> Option<u32> {
        let (_, _, members) = dump.get(&id)?;
        if let Some((_, _, bits)) = members.iter().find(|(n, _, _)| n == member) {
            return Some(bits / 8);
        }
        members
            .iter()
            .filter(|(n, _, _)| n == "(anon)")
            .find_map(|(_, ty, bits)| {
                bpftool_offset(dump, *ty, member).map(|inner| bits / 8 + inner)
            })
    }

    #[test]
    fn kernel_offsets_match_bpftool() {
        if !Path::new(VMLINUX_BTF).exists() {
            return cannot_run("the kernel publishes no BTF at /sys/kernel/btf/vmlinux");
        }
        let Some(dump) = bpftool_raw_dump() else {
            return cannot_run("bpftool is not installed (cargo xtask setup installs it)");
        };
        let ours = sock_common_offsets(&Btf::from_sys_fs().unwrap()).unwrap();
        let sock_common = dump
            .iter()
            .find(|(_, (kind, _, _))| kind == "STRUCT sock_common")
            .map(|(id, _)| *id)
            .unwrap();
        let theirs = |m| bpftool_offset(&dump, sock_common, m).unwrap();
        assert_eq!(ours.skc_daddr, theirs("skc_daddr"));
        assert_eq!(ours.skc_rcv_saddr, theirs("skc_rcv_saddr"));
        assert_eq!(ours.skc_dport, theirs("skc_dport"));
        assert_eq!(ours.skc_num, theirs("skc_num"));
        assert_eq!(ours.skc_family, theirs("skc_family"));
        assert_eq!(ours.skc_v6_daddr, theirs("skc_v6_daddr"));
        assert_eq!(ours.skc_v6_rcv_saddr, theirs("skc_v6_rcv_saddr"));
        // The pair sits in an anonymous union, daddr first: a layout fact the probes rely on.
        assert_eq!(ours.skc_rcv_saddr, ours.skc_daddr + 4);

        let fd = fd_offsets(&Btf::from_sys_fs().unwrap()).unwrap();
        let theirs = |strukt: &str, member: &str| {
            let id = dump
                .iter()
                .find(|(_, (kind, _, _))| *kind == format!("STRUCT {strukt}"))
                .map(|(id, _)| *id)
                .unwrap();
            bpftool_offset(&dump, id, member).unwrap()
        };
        assert_eq!(fd.task_files, theirs("task_struct", "files"));
        assert_eq!(fd.files_fdt, theirs("files_struct", "fdt"));
        assert_eq!(fd.fdtable_max_fds, theirs("fdtable", "max_fds"));
        assert_eq!(fd.fdtable_fd, theirs("fdtable", "fd"));
        assert_eq!(fd.file_private_data, theirs("file", "private_data"));
        assert_eq!(fd.file_f_inode, theirs("file", "f_inode"));
        assert_eq!(fd.inode_i_mode, theirs("inode", "i_mode"));
        assert_eq!(fd.socket_sk, theirs("socket", "sk"));
        assert_eq!(fd.sock_protocol, theirs("sock", "sk_protocol"));
        assert_eq!(fd.sock_type, theirs("sock", "sk_type"));
        assert_eq!(fd.tcp_write_seq, theirs("tcp_sock", "write_seq"));
        assert_eq!(fd.tcp_copied_seq, theirs("tcp_sock", "copied_seq"));
        assert_eq!(
            fd.task_fsbase,
            theirs("task_struct", "thread") + theirs("thread_struct", "fsbase")
        );
    }

    #[test]
    fn process_offsets_follow_the_kernels_layout() {
        if !Path::new(VMLINUX_BTF).exists() {
            return cannot_run("the kernel publishes no BTF at /sys/kernel/btf/vmlinux");
        }
        let proc = proc_offsets(&Btf::from_sys_fs().unwrap()).unwrap();
        // mm_struct's four bounds sit in one `unsigned long arg_start, arg_end, env_start,
        // env_end;` declaration (inside an anonymous struct): consecutive, 8 bytes apart.
        assert_eq!(proc.mm_arg_end, proc.mm_arg_start + 8);
        assert_eq!(proc.mm_env_start, proc.mm_arg_start + 16);
        assert_eq!(proc.mm_env_end, proc.mm_arg_start + 24);
        assert!(proc.task_mm > 0 && proc.mm_exe_file > 0 && proc.dentry_name > 0);
        let Some(dump) = bpftool_raw_dump() else {
            return cannot_run("bpftool is not installed (cargo xtask setup installs it)");
        };
        let theirs = |strukt: &str, member: &str| {
            let id = dump
                .iter()
                .find(|(_, (kind, _, _))| *kind == format!("STRUCT {strukt}"))
                .map(|(id, _)| *id)
                .unwrap();
            bpftool_offset(&dump, id, member)
        };
        assert_eq!(Some(proc.task_mm), theirs("task_struct", "mm"));
        assert_eq!(
            Some(proc.file_path_dentry),
            theirs("file", "f_path")
                .zip(theirs("path", "dentry"))
                .map(|(a, b)| a + b)
        );
    }
}
