//! Simulated system RAM: what device DMA reaches after translation. Sparse (4 KiB pages
//! materialise on first write, read as zero before), so a machine of many GiB costs only
//! what is touched.

use std::collections::HashMap;
use std::sync::Mutex;

const PAGE: u64 = 4096;

/// An access beyond the end of RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("real address {addr:#x}+{len:#x} is beyond RAM ({size:#x} bytes)")]
pub struct BeyondRam {
    /// First byte.
    pub addr: u64,
    /// Length.
    pub len: u64,
    /// RAM size.
    pub size: u64,
}

/// The machine's memory.
#[derive(Debug)]
pub struct Ram {
    size: u64,
    pages: Mutex<HashMap<u64, Box<[u8]>>>,
}

impl Ram {
    /// `size` bytes, all zero.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            pages: Mutex::new(HashMap::new()),
        }
    }
    /// Bytes of RAM.
    pub fn size(&self) -> u64 {
        self.size
    }
    fn check(&self, addr: u64, len: u64) -> Result<(), BeyondRam> {
        if addr.checked_add(len).is_some_and(|e| e <= self.size) {
            Ok(())
        } else {
            Err(BeyondRam {
                addr,
                len,
                size: self.size,
            })
        }
    }
    /// Reads `buf.len()` bytes at `addr`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), BeyondRam> {
        self.check(addr, buf.len() as u64)?;
        let pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr + done as u64;
            let (pn, off) = (a / PAGE, (a % PAGE) as usize);
            let n = (PAGE as usize - off).min(buf.len() - done);
            match pages.get(&pn) {
                Some(p) => buf[done..done + n].copy_from_slice(&p[off..off + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        Ok(())
    }
    /// Writes `data` at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), BeyondRam> {
        self.check(addr, data.len() as u64)?;
        let mut pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        let mut done = 0usize;
        while done < data.len() {
            let a = addr + done as u64;
            let (pn, off) = (a / PAGE, (a % PAGE) as usize);
            let n = (PAGE as usize - off).min(data.len() - done);
            let p = pages
                .entry(pn)
                .or_insert_with(|| vec![0u8; PAGE as usize].into_boxed_slice());
            p[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_was_written_across_pages_and_zero_elsewhere() {
        let ram = Ram::new(1 << 20);
        ram.write(4090, b"hello world").unwrap();
        let mut b = [0u8; 11];
        ram.read(4090, &mut b).unwrap();
        assert_eq!(&b, b"hello world");
        let mut z = [1u8; 4];
        ram.read(8192, &mut z).unwrap();
        assert_eq!(z, [0; 4]);
    }

    #[test]
    fn accesses_past_the_end_are_refused_and_change_nothing() {
        let ram = Ram::new(4096);
        assert!(ram.write(4095, b"ab").is_err());
        assert!(ram.write(u64::MAX, b"a").is_err());
        let mut b = [9u8; 1];
        ram.read(4095, &mut b).unwrap();
        assert_eq!(b, [0]);
    }
}
