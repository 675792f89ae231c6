//! `<data>/cluster/identity`: which node this data directory belongs to, the founders of
//! its cluster, and whether this node founded it or joined it later. Written once: when the
//! cluster first formed (founders) or when the controller accepted this node's join.
//!
//! Layout (little-endian): `magic "FRID", version:u16 = 2, node_id:i32, role:u8 (0 founder,
//! 1 joined), n:u32, founders:i32 × n, crc:u32` (CRC32C of every byte before it). Version 1
//! (no `role`, always a founder) is still read. Written atomically (temp file, fsync, rename,
//! fsync of the directory) with blocking `std::fs`: once per cluster, on core 0, at start-up.
//!
//! Ownership: plain functions and values; used on core 0.

use std::io::Write as _;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"FRID";
const VERSION: u16 = 2;
const VERSION_1: u16 = 1;
const ROLE_FOUNDER: u8 = 0;
const ROLE_JOINED: u8 = 1;

/// Errors reading or writing the identity file.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("cluster identity I/O on {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("corrupt cluster identity file {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub node_id: i32,
    /// Broker ids of the founding nodes, ascending (the controller group's voters).
    pub founders: Vec<i32>,
    /// This node joined the formed cluster later (a learner of the controller group, like a
    /// KRaft observer); false for a founder.
    pub joined: bool,
}

/// Where the file lives.
pub fn identity_path(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster").join("identity")
}

fn encode(id: &Identity) -> Vec<u8> {
    let mut b = Vec::with_capacity(19 + 4 * id.founders.len());
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&id.node_id.to_le_bytes());
    b.push(if id.joined { ROLE_JOINED } else { ROLE_FOUNDER });
    b.extend_from_slice(&(id.founders.len() as u32).to_le_bytes());
    for f in &id.founders {
        b.extend_from_slice(&f.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Result<Identity, String> {
    if b.len() < 18 {
        return Err("too short".into());
    }
    let (content, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(content) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err("checksum mismatch".into());
    }
    if &content[0..4] != MAGIC {
        return Err("bad magic".into());
    }
    let version = u16::from_le_bytes(content[4..6].try_into().expect("2 bytes"));
    let node_id = i32::from_le_bytes(content[6..10].try_into().expect("4 bytes"));
    let (joined, after_role) = match version {
        VERSION_1 => (false, &content[10..]),
        VERSION => match content.get(10) {
            Some(&ROLE_FOUNDER) => (false, &content[11..]),
            Some(&ROLE_JOINED) => (true, &content[11..]),
            Some(r) => return Err(format!("unknown role {r}")),
            None => return Err("too short".into()),
        },
        v => return Err(format!("unsupported version {v}")),
    };
    if after_role.len() < 4 {
        return Err("too short".into());
    }
    let n = u32::from_le_bytes(after_role[0..4].try_into().expect("4 bytes")) as usize;
    let rest = &after_role[4..];
    if rest.len() != n.saturating_mul(4) {
        return Err("founder count does not match the file".into());
    }
    let founders = rest
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    Ok(Identity {
        node_id,
        founders,
        joined,
    })
}

/// Reads the identity of `data_dir`; `Ok(None)` if the cluster never formed here.
pub fn load(data_dir: &Path) -> Result<Option<Identity>, IdentityError> {
    let path = identity_path(data_dir);
    match std::fs::read(&path) {
        Ok(b) => decode(&b)
            .map(Some)
            .map_err(|reason| IdentityError::Corrupt { path, reason }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(IdentityError::Io {
            path,
            reason: e.to_string(),
        }),
    }
}

/// Writes the identity of `data_dir` atomically.
pub fn store(data_dir: &Path, id: &Identity) -> Result<(), IdentityError> {
    let path = identity_path(data_dir);
    let dir = path
        .parent()
        .expect("identity path has a parent")
        .to_path_buf();
    let io = |p: &Path, e: std::io::Error| IdentityError::Io {
        path: p.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let tmp = dir.join("identity.tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(&encode(id)).map_err(|e| io(&tmp, e))?;
        f.sync_all().map_err(|e| io(&tmp, e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(&dir, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_a_restart_and_damage_is_reported() {
        let dir = std::env::temp_dir().join(format!("freshet-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(load(&dir), Ok(None));
        let id = Identity {
            node_id: 2,
            founders: vec![0, 1, 2],
            joined: false,
        };
        store(&dir, &id).unwrap();
        assert_eq!(load(&dir), Ok(Some(id.clone())));
        let joined = Identity {
            node_id: 3,
            founders: vec![0, 1, 2],
            joined: true,
        };
        store(&dir, &joined).unwrap();
        assert_eq!(load(&dir), Ok(Some(joined.clone())));
        store(&dir, &id).unwrap();
        let path = identity_path(&dir);
        let mut b = std::fs::read(&path).unwrap();
        b[8] ^= 1;
        std::fs::write(&path, &b).unwrap();
        assert!(matches!(load(&dir), Err(IdentityError::Corrupt { .. })));
        for cut in 0..encode(&id).len() {
            assert!(decode(&encode(&id)[..cut]).is_err());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_version_1_file_reads_as_a_founder_and_unknown_roles_are_refused() {
        // Session 2 wrote version 1: no role byte.
        let mut v1 = Vec::new();
        v1.extend_from_slice(MAGIC);
        v1.extend_from_slice(&VERSION_1.to_le_bytes());
        v1.extend_from_slice(&1i32.to_le_bytes());
        v1.extend_from_slice(&2u32.to_le_bytes());
        v1.extend_from_slice(&0i32.to_le_bytes());
        v1.extend_from_slice(&1i32.to_le_bytes());
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode(&v1),
            Ok(Identity {
                node_id: 1,
                founders: vec![0, 1],
                joined: false
            })
        );
        let mut bad = encode(&Identity {
            node_id: 1,
            founders: vec![0],
            joined: true,
        });
        bad[10] = 7;
        let n = bad.len() - 4;
        let crc = crc32c::crc32c(&bad[..n]);
        bad[n..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&bad), Err("unknown role 7".to_string()));
    }
}
