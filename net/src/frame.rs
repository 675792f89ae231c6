//! Kafka framing: a 4-byte big-endian size, then that many bytes (header + body).
//!
//! `FrameReader` is per connection (owned by the connection's reader task). Frames come out
//! as `Bytes` slices of the read buffer, so produce payloads reach storage without a copy.

use bytes::{Buf, Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt};
use thiserror::Error;

/// Why a connection's byte stream could not be framed; each closes the connection.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("frame size {size} is negative or below the 8-byte request header minimum")]
    BadSize { size: i32 },
    #[error("frame of {size} bytes exceeds socket.request.max.bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Smallest request frame: api key, api version, correlation id.
pub const MIN_REQUEST_FRAME_BYTES: i32 = 8;
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Buffers a connection's input and cuts it into frames. Per connection.
#[derive(Debug)]
pub struct FrameReader {
    buf: BytesMut,
    max_frame_bytes: usize,
}

impl FrameReader {
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameReader {
            buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            max_frame_bytes,
        }
    }

    /// The next complete frame already buffered (without its size prefix), if any.
    pub fn next_buffered(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let size = i32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes"));
        if size < MIN_REQUEST_FRAME_BYTES {
            return Err(FrameError::BadSize { size });
        }
        let size = size as usize;
        if size > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                size,
                max: self.max_frame_bytes,
            });
        }
        if self.buf.len() < 4 + size {
            self.buf.reserve(4 + size - self.buf.len());
            return Ok(None);
        }
        let mut frame = self.buf.split_to(4 + size);
        frame.advance(4);
        Ok(Some(frame.freeze()))
    }

    /// Reads until a whole frame is available. `Ok(None)` on a clean end of stream (between
    /// frames).
    pub async fn read_frame<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> Result<Option<Bytes>, FrameError> {
        loop {
            if let Some(f) = self.next_buffered()? {
                return Ok(Some(f));
            }
            let len = self.buf.len();
            let want = (self.buf.capacity() - len).max(READ_CHUNK_BYTES);
            self.buf.resize(len + want, 0);
            let n = match r.read(&mut self.buf[len..]).await {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(e.into());
                }
            };
            self.buf.truncate(len + n);
            if n == 0 {
                return if len == 0 {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated { buffered: len })
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as i32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        futures_lite::future::block_on(f)
    }

    #[test]
    fn pipelined_frames_come_out_whole_and_in_order() {
        let mut wire = frame(b"request-one!");
        wire.extend(frame(b"request-two-longer"));
        let mut r = &wire[..];
        let mut fr = FrameReader::new(1024);
        assert_eq!(
            run(fr.read_frame(&mut r)).unwrap().unwrap(),
            &b"request-one!"[..]
        );
        assert_eq!(
            run(fr.read_frame(&mut r)).unwrap().unwrap(),
            &b"request-two-longer"[..]
        );
        assert!(run(fr.read_frame(&mut r)).unwrap().is_none());
    }

    #[test]
    fn a_frame_split_across_reads_is_reassembled() {
        let wire = frame(&[7u8; 100_000]);
        // A reader that returns at most 10 bytes per call.
        struct Trickle<'a>(&'a [u8]);
        impl AsyncRead for Trickle<'_> {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let n = self.0.len().min(10).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                std::task::Poll::Ready(Ok(n))
            }
        }
        let mut r = Trickle(&wire);
        let mut fr = FrameReader::new(1 << 20);
        assert_eq!(run(fr.read_frame(&mut r)).unwrap().unwrap().len(), 100_000);
    }

    #[test]
    fn oversized_negative_and_truncated_frames_are_errors() {
        let mut fr = FrameReader::new(16);
        let mut r = &frame(&[0u8; 17])[..];
        assert!(matches!(
            run(fr.read_frame(&mut r)),
            Err(FrameError::TooLarge { size: 17, max: 16 })
        ));
        let mut fr = FrameReader::new(16);
        let neg = (-5i32).to_be_bytes();
        let mut r = &neg[..];
        assert!(matches!(
            run(fr.read_frame(&mut r)),
            Err(FrameError::BadSize { size: -5 })
        ));
        let mut fr = FrameReader::new(1024);
        let cut = frame(b"0123456789");
        let mut r = &cut[..9];
        assert!(matches!(
            run(fr.read_frame(&mut r)),
            Err(FrameError::Truncated { buffered: 9 })
        ));
    }
}
