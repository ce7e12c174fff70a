//! Recordings: the raw event stream in a versioned file, written by `wirespan record` and replayed
//! by the `source` stage without privileges. Later stages record their fixtures with it.
//!
//! Layout (little-endian): a 32-byte header — magic `WSPNREC\0`, format version (u32), event ABI
//! version (u32, `EVENT_ABI_VERSION`), the realtime−monotonic clock offset at recording (i64, so a
//! replay shows the original wall times), capture bytes (u32), reserved (u32) — then records, each
//! a u32 length and that many bytes exactly as the ring buffer delivered them, then an end marker
//! (length `u32::MAX`). A file without the marker was cut short (a killed recorder, a partial
//! copy), even when the cut falls between records.

use std::{
    fs::File,
    io::{self, BufReader, BufWriter, Read, Write},
    path::{Path, PathBuf},
};

use wirespan_shared::EVENT_ABI_VERSION;

const MAGIC: &[u8; 8] = b"WSPNREC\0";
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 32;
/// No record is this big (a data event is at most a header plus `MAX_CAPTURE`); a length above it
/// means a corrupt file, not a reason to allocate.
const MAX_RECORD: u32 = 1 << 20;
/// The length that marks the end of a complete recording.
const END_MARKER: u32 = u32::MAX;

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("cannot open recording {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("reading recording {path} failed: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing recording {path} failed: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "{path} is not a wirespan recording (no WSPNREC header); record one with `wirespan record --output FILE`"
    )]
    NotARecording { path: PathBuf },
    #[error("{path} is recording format {found}; this wirespan reads format {FORMAT_VERSION}")]
    Format { path: PathBuf, found: u32 },
    #[error(
        "{path} holds events of ABI {found}; this wirespan decodes ABI {EVENT_ABI_VERSION} (re-record it)"
    )]
    Abi { path: PathBuf, found: u32 },
    #[error(
        "{path} is truncated at record {index} (byte {offset}): the recorder was stopped before it finished, or the file was cut; {records_read} complete records were read"
    )]
    Truncated {
        path: PathBuf,
        index: u64,
        offset: u64,
        records_read: u64,
    },
    #[error("{path} is corrupt: record {index} at byte {offset} claims {len} bytes")]
    Corrupt {
        path: PathBuf,
        index: u64,
        offset: u64,
        len: u32,
    },
}

/// What a recording's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordingInfo {
    /// realtime − monotonic nanoseconds when it was recorded.
    pub wall_offset_ns: i64,
    pub capture_bytes: u32,
}

/// Writes a recording.
pub struct RecordingWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl RecordingWriter {
    pub fn create(path: &Path, info: RecordingInfo) -> Result<Self, RecordingError> {
        // Only the owner may read it: a recording holds captured bytes.
        let file = crate::private_file::create(path).map_err(|source| RecordingError::Open {
            path: path.to_owned(),
            source,
        })?;
        let mut writer = Self {
            out: BufWriter::new(file),
            path: path.to_owned(),
        };
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&EVENT_ABI_VERSION.to_le_bytes());
        header.extend_from_slice(&info.wall_offset_ns.to_le_bytes());
        header.extend_from_slice(&info.capture_bytes.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        writer.write_all(&header)?;
        Ok(writer)
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), RecordingError> {
        self.out
            .write_all(bytes)
            .map_err(|source| RecordingError::Write {
                path: self.path.clone(),
                source,
            })
    }

    /// Append one raw record.
    pub fn record(&mut self, record: &[u8]) -> Result<(), RecordingError> {
        let len = u32::try_from(record.len()).unwrap_or(u32::MAX);
        self.write_all(&len.to_le_bytes())?;
        self.write_all(record)
    }

    pub fn flush(&mut self) -> Result<(), RecordingError> {
        self.out.flush().map_err(|source| RecordingError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// Write the end marker and flush: the recording is complete.
    pub fn finish(mut self) -> Result<(), RecordingError> {
        self.write_all(&END_MARKER.to_le_bytes())?;
        self.flush()
    }
}

/// Reads a recording back, record by record.
pub struct RecordingReader<R = BufReader<File>> {
    input: R,
    path: PathBuf,
    pub info: RecordingInfo,
    index: u64,
    offset: u64,
}

impl RecordingReader {
    pub fn open(path: &Path) -> Result<Self, RecordingError> {
        let file = File::open(path).map_err(|source| RecordingError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::new(BufReader::new(file), path)
    }
}

impl<R: Read> RecordingReader<R> {
    /// Check the header of `input` (named `path` in errors).
    pub fn new(mut input: R, path: &Path) -> Result<Self, RecordingError> {
        let path = path.to_owned();
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(&mut input, &mut header).map_err(|source| RecordingError::Read {
            path: path.clone(),
            source,
        })?;
        if got < MAGIC.len() || &header[..8] != MAGIC {
            return Err(RecordingError::NotARecording { path });
        }
        if got < HEADER_LEN {
            return Err(RecordingError::Truncated {
                path,
                index: 0,
                offset: 0,
                records_read: 0,
            });
        }
        let u32_at =
            |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
        if u32_at(8) != FORMAT_VERSION {
            return Err(RecordingError::Format {
                path,
                found: u32_at(8),
            });
        }
        if u32_at(12) != EVENT_ABI_VERSION {
            return Err(RecordingError::Abi {
                path,
                found: u32_at(12),
            });
        }
        let info = RecordingInfo {
            wall_offset_ns: i64::from_le_bytes(header[16..24].try_into().expect("8 bytes")),
            capture_bytes: u32_at(24),
        };
        Ok(Self {
            input,
            path,
            info,
            index: 0,
            offset: HEADER_LEN as u64,
        })
    }

    /// The next raw record, `None` at the end marker.
    pub fn next_record(&mut self) -> Result<Option<Vec<u8>>, RecordingError> {
        let mut len = [0u8; 4];
        let got = read_full(&mut self.input, &mut len).map_err(|source| self.read_error(source))?;
        if got < 4 {
            return Err(self.truncated());
        }
        let len = u32::from_le_bytes(len);
        if len == END_MARKER {
            return Ok(None);
        }
        if len > MAX_RECORD {
            return Err(RecordingError::Corrupt {
                path: self.path.clone(),
                index: self.index,
                offset: self.offset,
                len,
            });
        }
        let mut record = vec![0; len as usize];
        let got =
            read_full(&mut self.input, &mut record).map_err(|source| self.read_error(source))?;
        if got < record.len() {
            return Err(self.truncated());
        }
        self.index += 1;
        self.offset += 4 + u64::from(len);
        Ok(Some(record))
    }

    fn read_error(&self, source: io::Error) -> RecordingError {
        RecordingError::Read {
            path: self.path.clone(),
            source,
        }
    }

    fn truncated(&self) -> RecordingError {
        RecordingError::Truncated {
            path: self.path.clone(),
            index: self.index,
            offset: self.offset,
            records_read: self.index,
        }
    }
}

/// Read until `buf` is full or the input ends; how many bytes were read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: RecordingInfo = RecordingInfo {
        wall_offset_ns: -5,
        capture_bytes: 4096,
    };

    fn recording(records: &[&[u8]]) -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!(
            "wirespan-rec-{}-{}",
            std::process::id(),
            records.len()
        ));
        let mut writer = RecordingWriter::create(&dir, INFO).unwrap();
        for r in records {
            writer.record(r).unwrap();
        }
        writer.finish().unwrap();
        let bytes = std::fs::read(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        bytes
    }

    #[test]
    fn a_recording_is_readable_by_its_owner_only_even_over_an_existing_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let path = std::env::temp_dir().join(format!("wirespan-rec-mode-{}", std::process::id()));
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let writer = RecordingWriter::create(&path, INFO).unwrap();
        writer.finish().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(mode & 0o777, 0o600);
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Vec<u8>>, RecordingError> {
        let mut reader = RecordingReader::new(bytes, Path::new("t.rec"))?;
        assert_eq!(reader.info, INFO);
        let mut out = Vec::new();
        while let Some(r) = reader.next_record()? {
            out.push(r);
        }
        Ok(out)
    }

    #[test]
    fn round_trips_records() {
        let bytes = recording(&[b"one", b"", b"three"]);
        assert_eq!(
            read_all(&bytes).unwrap(),
            vec![b"one".to_vec(), vec![], b"three".to_vec()]
        );
    }

    #[test]
    fn truncated_foreign_and_future_files_are_clear_errors() {
        let bytes = recording(&[b"one", b"three"]);
        for cut in HEADER_LEN + 1..bytes.len() {
            let err = read_all(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, RecordingError::Truncated { .. }),
                "cut {cut}: {err}"
            );
        }
        let err = read_all(b"GET / HTTP/1.1\r\n").unwrap_err();
        assert!(
            err.to_string().contains("not a wirespan recording"),
            "{err}"
        );
        assert!(matches!(
            read_all(b""),
            Err(RecordingError::NotARecording { .. })
        ));
        let mut future = bytes.clone();
        future[8] = 9;
        assert!(matches!(
            read_all(&future),
            Err(RecordingError::Format { found: 9, .. })
        ));
        let mut old_abi = bytes.clone();
        old_abi[12] = 1;
        assert!(matches!(
            read_all(&old_abi),
            Err(RecordingError::Abi { found: 1, .. })
        ));
        let mut huge = bytes;
        huge[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
        assert!(matches!(
            read_all(&huge),
            Err(RecordingError::Corrupt { .. })
        ));
    }
}
