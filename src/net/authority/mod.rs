//! Accepting client connections whose HTTP/2 `:authority` is a URL.
//!
//! `etcdctl endpoint status --cluster` (3.4) dials every member it lists with the gRPC
//! target `passthrough:///http://host:port`, and grpc-go then sends the whole URL, scheme
//! included, as the `:authority` pseudo-header. etcd's Go server takes any authority. The
//! h2 crate under tonic parses it as an RFC 3986 authority, finds `http://…` malformed and
//! resets the stream with PROTOCOL_ERROR before any of our code runs; it has no hook to
//! relax that check. So the request is mended while it is still bytes: [`ClientStream`]
//! wraps each accepted client connection and rewrites the client's half of the HTTP/2
//! connection before h2 reads it. What h2 writes back goes to the socket untouched.
//!
//! # Design
//!
//! The client sends a 24-byte preface, then frames (a 9-byte header: 24-bit length, type,
//! flags, 31-bit stream id; then the payload). Frames pass through as they are, except
//! header blocks (a HEADERS frame and the CONTINUATION frames up to END_HEADERS), which are
//! gathered whole. The first header block decides what happens to the connection:
//!
//! - Its `:authority` has no `scheme://` (every ordinary client). The block goes on as it
//!   came and the connection becomes a plain pipe: reads go straight to the socket, with no
//!   parsing and no copy. gRPC clients keep one authority for the life of a connection, so
//!   one look is enough.
//! - Its `:authority` is a URL. From then on every header block, this one included, is
//!   decoded against the client's HPACK dynamic table (`hpack.rs`), `:authority` loses its
//!   `scheme://` (and any path after the host and port), and the block is encoded again
//!   without the dynamic table and sent on in frames of at most 16,384 bytes (the frame
//!   size every HTTP/2 peer must accept). Since h2's decoder is then never told to add an
//!   entry, its table stays empty and cannot fall out of step with the client's, which our
//!   decoder alone follows. Padding is dropped; the priority fields and END_STREAM are kept.
//!
//! # Errors
//!
//! Nothing the client sends may panic here. Until the first header block has been judged,
//! anything unexpected (not HTTP/2, a malformed frame, a block that does not decode, the
//! end of the stream) hands the connection to h2 exactly as received, so this adapter never
//! turns away a connection h2 would have served and never hides an error h2 would have
//! reported. Once rewriting, h2 can no longer be shown what the client sent (its decoder
//! did not see the earlier blocks), so a malformed header block, or one decoding to more
//! than `HEADER_BLOCK_BYTES_MAX`, ends the connection with an `InvalidData` I/O error.

mod hpack;

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// What every HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_BYTES: usize = 9;
/// The largest frame payload every peer must accept (SETTINGS_MAX_FRAME_SIZE's initial
/// value), so rewritten frames never depend on what h2 announced.
const FRAME_PAYLOAD_BYTES_MAX: usize = 16_384;
/// The most a header block may take, received (all its fragments) or decoded (counted as
/// HPACK table entries). gRPC metadata is a few hundred bytes.
const HEADER_BLOCK_BYTES_MAX: usize = 1 << 20;
/// The HPACK dynamic table size the client may use: HTTP/2's initial
/// SETTINGS_HEADER_TABLE_SIZE, which h2 leaves as it is.
const HPACK_TABLE_BYTES_MAX: usize = 4_096;
/// Bytes asked of the socket per read while frames are being parsed.
const READ_BYTES: usize = 8_192;

const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Stream dependency (4 bytes) and weight (1 byte) of a HEADERS frame with PRIORITY.
const PRIORITY_BYTES: usize = 5;

/// A client connection whose incoming bytes are rewritten as the module doc describes.
pub struct ClientStream<S> {
    socket: S,
    rewriter: Rewriter,
}

impl<S> ClientStream<S> {
    pub fn new(socket: S) -> Self {
        ClientStream {
            socket,
            rewriter: Rewriter::new(),
        }
    }
}

impl<S: Connected> Connected for ClientStream<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.socket.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.rewriter.output.is_empty() {
                let n = this.rewriter.output.len().min(buf.remaining());
                buf.put_slice(&this.rewriter.output[..n]);
                this.rewriter.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.rewriter.mode == Mode::PassThrough {
                return Pin::new(&mut this.socket).poll_read(cx, buf);
            }
            let mut chunk = [0u8; READ_BYTES];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.socket).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.rewriter.end_of_stream();
                if this.rewriter.output.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            this.rewriter.input.extend_from_slice(read.filled());
            this.rewriter.process()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reading the connection preface.
    Preface,
    /// Passing frames through until the first header block is complete and judged.
    Inspect,
    /// Rewriting every header block (the first one had a URL for its authority).
    Rewrite,
    /// Handing every byte to h2 as it comes, for good.
    PassThrough,
}

/// A header block being gathered.
struct Block {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; PRIORITY_BYTES]>,
    /// The HPACK fragments so far, padding removed.
    fragments: Vec<u8>,
    /// The frames as received, to send on unchanged if the block turns out to need no
    /// rewrite (kept only while inspecting).
    received: Vec<u8>,
}

/// The client-to-server half of the connection, rewritten; no I/O of its own, so that it
/// can be fed any split of the bytes.
struct Rewriter {
    mode: Mode,
    /// Received and not yet looked at.
    input: BytesMut,
    /// Ready for h2; everything in it comes before anything in `input`.
    output: BytesMut,
    /// How many of the next bytes of `input` are the rest of a frame being passed through.
    verbatim: usize,
    block: Option<Block>,
    decoder: hpack::Decoder,
}

/// A frame's 9-byte header.
#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    length: usize,
    kind: u8,
    flags: u8,
    stream_id: u32,
}

impl FrameHeader {
    fn parse(bytes: &[u8]) -> Self {
        FrameHeader {
            length: usize::from(bytes[0]) << 16
                | usize::from(bytes[1]) << 8
                | usize::from(bytes[2]),
            kind: bytes[3],
            flags: bytes[4],
            stream_id: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }
}

/// What h2 reads of a connection on which a client sent `reads`, one after another, or the
/// error that ends the connection (for the fuzz targets).
pub(crate) fn rewrite<'a>(reads: impl IntoIterator<Item = &'a [u8]>) -> io::Result<Vec<u8>> {
    let mut rewriter = Rewriter::new();
    let mut read = Vec::new();
    for chunk in reads {
        rewriter.input.extend_from_slice(chunk);
        rewriter.process()?;
        read.extend_from_slice(&rewriter.output.split());
    }
    rewriter.end_of_stream();
    read.extend_from_slice(&rewriter.output.split());
    Ok(read)
}

impl Rewriter {
    fn new() -> Self {
        Rewriter {
            mode: Mode::Preface,
            input: BytesMut::new(),
            output: BytesMut::new(),
            verbatim: 0,
            block: None,
            decoder: hpack::Decoder::new(HPACK_TABLE_BYTES_MAX),
        }
    }

    /// Moves everything `input` holds that can be dealt with to `output`; what is left is
    /// an incomplete frame (or preface).
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.mode {
                Mode::PassThrough => {
                    self.output.unsplit(self.input.split());
                    return Ok(());
                }
                Mode::Preface => {
                    let seen = self.input.len().min(PREFACE.len());
                    if self.input[..seen] != PREFACE[..seen] {
                        // Not HTTP/2 with prior knowledge: h2 will say what it is.
                        self.pass_through();
                        continue;
                    }
                    if seen < PREFACE.len() {
                        return Ok(());
                    }
                    self.output.unsplit(self.input.split_to(PREFACE.len()));
                    self.mode = Mode::Inspect;
                }
                Mode::Inspect | Mode::Rewrite if self.verbatim > 0 => {
                    if self.input.is_empty() {
                        return Ok(());
                    }
                    let n = self.verbatim.min(self.input.len());
                    self.output.unsplit(self.input.split_to(n));
                    self.verbatim -= n;
                }
                Mode::Inspect | Mode::Rewrite => {
                    if !self.frame()? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Deals with the frame at the front of `input`, or returns false if it is not all
    /// there yet (only header block frames wait for their whole payload).
    fn frame(&mut self) -> io::Result<bool> {
        if self.input.len() < FRAME_HEADER_BYTES {
            return Ok(false);
        }
        let header = FrameHeader::parse(&self.input[..FRAME_HEADER_BYTES]);
        match &self.block {
            None if header.kind != FRAME_HEADERS => {
                // Not part of a header block: on it goes, the payload as it arrives.
                self.output.unsplit(self.input.split_to(FRAME_HEADER_BYTES));
                self.verbatim = header.length;
                return Ok(true);
            }
            Some(block)
                if header.kind != FRAME_CONTINUATION || header.stream_id != block.stream_id =>
            {
                // RFC 9113 §6.10: nothing may come between the frames of a header block.
                return self.malformed("header block interrupted by another frame");
            }
            _ => {}
        }
        let gathered = self.block.as_ref().map_or(0, |block| block.fragments.len());
        if gathered + header.length > HEADER_BLOCK_BYTES_MAX {
            return self.malformed("header block too large");
        }
        if self.input.len() < FRAME_HEADER_BYTES + header.length {
            return Ok(false);
        }
        let frame_bytes = FRAME_HEADER_BYTES + header.length;
        let mut block = match self.block.take() {
            Some(mut block) => {
                block
                    .fragments
                    .extend_from_slice(&self.input[FRAME_HEADER_BYTES..frame_bytes]);
                block
            }
            None => {
                let payload = &self.input[FRAME_HEADER_BYTES..frame_bytes];
                let Some((priority, fragment)) = split_headers_payload(header.flags, payload)
                else {
                    return self.malformed("HEADERS padding longer than the frame");
                };
                Block {
                    stream_id: header.stream_id,
                    end_stream: header.flags & FLAG_END_STREAM != 0,
                    priority,
                    fragments: fragment.to_vec(),
                    received: Vec::new(),
                }
            }
        };
        let frame = self.input.split_to(frame_bytes);
        if self.mode == Mode::Inspect {
            block.received.extend_from_slice(&frame);
        }
        if header.flags & FLAG_END_HEADERS == 0 {
            self.block = Some(block);
            return Ok(true);
        }
        self.finish(block)?;
        Ok(true)
    }

    /// Decodes a complete header block and sends it on: as received if the connection
    /// turns out to need no rewrite, rewritten otherwise.
    fn finish(&mut self, block: Block) -> io::Result<()> {
        let mut fields = match self
            .decoder
            .decode(&block.fragments, HEADER_BLOCK_BYTES_MAX)
        {
            Ok(fields) => fields,
            Err(error) if self.mode == Mode::Inspect => {
                tracing::debug!(%error, "first header block does not decode; passing it to h2");
                self.send_received_and_pass_through(block);
                return Ok(());
            }
            Err(error) => return Err(io::Error::new(io::ErrorKind::InvalidData, error)),
        };
        let mut rewritten = false;
        for field in fields
            .iter_mut()
            .filter(|field| field.name == b":authority")
        {
            if let Some(host) = strip_scheme(&field.value).map(<[u8]>::to_vec) {
                field.value = host;
                rewritten = true;
            }
        }
        if !rewritten && self.mode == Mode::Inspect {
            self.send_received_and_pass_through(block);
            return Ok(());
        }
        self.mode = Mode::Rewrite;
        let mut encoded = Vec::new();
        hpack::encode_without_table(&fields, &mut encoded);
        write_header_block(&mut self.output, &block, &encoded);
        Ok(())
    }

    /// Sends `block` on as it came and everything after it untouched.
    fn send_received_and_pass_through(&mut self, block: Block) {
        self.output.extend_from_slice(&block.received);
        self.pass_through();
    }

    /// From here on, everything goes to h2 as received.
    fn pass_through(&mut self) {
        if let Some(block) = self.block.take() {
            self.output.extend_from_slice(&block.received);
        }
        self.output.unsplit(self.input.split());
        self.mode = Mode::PassThrough;
    }

    /// Deals with input that breaks HTTP/2's rules: h2 judges it while inspecting, and it
    /// ends the connection while rewriting. Returns whether `process` may go on.
    fn malformed(&mut self, what: &'static str) -> io::Result<bool> {
        if self.mode == Mode::Inspect {
            tracing::debug!(what, "malformed client frame; passing the connection to h2");
            self.pass_through();
            return Ok(true);
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, what))
    }

    /// The client closed its side. While inspecting, h2 gets whatever was held back; while
    /// rewriting, an unfinished frame is dropped, since the connection ends with it anyway.
    fn end_of_stream(&mut self) {
        if matches!(self.mode, Mode::Preface | Mode::Inspect) {
            self.pass_through();
        }
    }
}

/// The priority fields and the HPACK fragment of a HEADERS payload, or None if its padding
/// does not fit (RFC 9113 §6.2).
fn split_headers_payload(
    flags: u8,
    payload: &[u8],
) -> Option<(Option<[u8; PRIORITY_BYTES]>, &[u8])> {
    let mut rest = payload;
    let mut padding = 0;
    if flags & FLAG_PADDED != 0 {
        let (&length, after) = rest.split_first()?;
        padding = usize::from(length);
        rest = after;
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        let (fields, after) = rest.split_first_chunk::<PRIORITY_BYTES>()?;
        priority = Some(*fields);
        rest = after;
    }
    let fragment_length = rest.len().checked_sub(padding)?;
    Some((priority, &rest[..fragment_length]))
}

/// The host and port of a URL-shaped authority (`scheme://host:port`, perhaps followed by
/// a path), or None when `authority` does not start with a scheme.
fn strip_scheme(authority: &[u8]) -> Option<&[u8]> {
    let colon = authority.windows(3).position(|window| window == b"://")?;
    let scheme = &authority[..colon];
    // RFC 3986 §3.1: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
    let is_scheme = scheme.first()?.is_ascii_alphabetic()
        && scheme
            .iter()
            .all(|&byte| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'-' | b'.'));
    if !is_scheme {
        return None;
    }
    let rest = &authority[colon + 3..];
    let end = rest
        .iter()
        .position(|&byte| matches!(byte, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Appends `encoded` as the header block of `block`'s stream: a HEADERS frame with its
/// END_STREAM and priority, then CONTINUATION frames, no payload over
/// [`FRAME_PAYLOAD_BYTES_MAX`], END_HEADERS on the last.
fn write_header_block(output: &mut BytesMut, block: &Block, encoded: &[u8]) {
    let mut rest = encoded;
    let mut first = true;
    loop {
        let priority = block.priority.filter(|_| first);
        let room = FRAME_PAYLOAD_BYTES_MAX - priority.map_or(0, |fields| fields.len());
        let (fragment, after) = rest.split_at(rest.len().min(room));
        let mut flags = 0;
        if after.is_empty() {
            flags |= FLAG_END_HEADERS;
        }
        if first && block.end_stream {
            flags |= FLAG_END_STREAM;
        }
        if priority.is_some() {
            flags |= FLAG_PRIORITY;
        }
        let length = fragment.len() + priority.map_or(0, |fields| fields.len());
        output.extend_from_slice(&(length as u32).to_be_bytes()[1..]);
        let kind = if first {
            FRAME_HEADERS
        } else {
            FRAME_CONTINUATION
        };
        output.extend_from_slice(&[kind, flags]);
        output.extend_from_slice(&block.stream_id.to_be_bytes());
        if let Some(fields) = priority {
            output.extend_from_slice(&fields);
        }
        output.extend_from_slice(fragment);
        if after.is_empty() {
            return;
        }
        rest = after;
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::hpack::{Decoder, Field};
    use super::*;

    const SETTINGS: u8 = 0x4;
    const WINDOW_UPDATE: u8 = 0x8;
    const DATA: u8 = 0x0;

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream_id.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A raw string literal of fewer than 127 bytes.
    fn string(out: &mut Vec<u8>, text: &str) {
        assert!(text.len() < 127);
        out.push(text.len() as u8);
        out.extend_from_slice(text.as_bytes());
    }

    /// The first request of a gRPC client, as grpc-go's encoder writes it: the fields
    /// that are not in the static table are added to the dynamic table.
    fn first_request(authority: &str) -> Vec<u8> {
        let mut block = vec![0x83, 0x86, 0x44]; // :method POST, :scheme http, :path …
        string(&mut block, "/etcdserverpb.Maintenance/Status");
        block.push(0x41); // :authority …
        string(&mut block, authority);
        block.push(0x5f); // content-type …
        string(&mut block, "application/grpc");
        block.push(0x40); // a new name
        string(&mut block, "te");
        string(&mut block, "trailers");
        block
    }

    /// The second request: the same fields, all from the dynamic table (62 is the newest
    /// entry), after a table size update that changes nothing.
    const SECOND_REQUEST: &[u8] = &[0x3f, 0xe1, 0x1f, 0x83, 0x86, 0xc1, 0xc0, 0xbf, 0xbe];

    fn expected_fields(authority: &str) -> Vec<Field> {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/etcdserverpb.Maintenance/Status"),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        .iter()
        .map(|&(name, value)| Field {
            name: name.into(),
            value: value.into(),
            never_indexed: false,
        })
        .collect()
    }

    /// What a client sends: the preface, its settings, then two requests with data, the
    /// first HEADERS frame padded and with priority fields, its block split over a
    /// CONTINUATION frame.
    fn connection(authority: &str) -> Vec<u8> {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 0]));
        bytes.extend(frame(WINDOW_UPDATE, 0, 0, &[0, 0x0f, 0, 1]));
        let block = first_request(authority);
        let (head, tail) = block.split_at(20);
        let mut payload = vec![3]; // pad length
        payload.extend_from_slice(&[0x80, 0, 0, 0, 15]); // exclusive on stream 0, weight 16
        payload.extend_from_slice(head);
        payload.extend_from_slice(&[0, 0, 0]);
        bytes.extend(frame(
            FRAME_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY,
            1,
            &payload,
        ));
        bytes.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, tail));
        bytes.extend(frame(DATA, FLAG_END_STREAM, 1, &[0, 0, 0, 0, 0]));
        bytes.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            3,
            SECOND_REQUEST,
        ));
        bytes
    }

    /// Feeds `input` to a rewriter `chunk` bytes at a time, then ends the stream.
    fn rewrite(input: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
        let mut rewriter = Rewriter::new();
        let mut output = Vec::new();
        for piece in input.chunks(chunk) {
            rewriter.input.extend_from_slice(piece);
            rewriter.process()?;
            output.extend_from_slice(&rewriter.output.split());
        }
        rewriter.end_of_stream();
        output.extend_from_slice(&rewriter.output.split());
        Ok(output)
    }

    /// Splits what h2 would read into frames (after the preface).
    fn frames(bytes: &[u8]) -> Vec<(FrameHeader, Vec<u8>)> {
        assert_eq!(&bytes[..PREFACE.len()], PREFACE);
        let mut rest = &bytes[PREFACE.len()..];
        let mut frames = Vec::new();
        while !rest.is_empty() {
            let header = FrameHeader::parse(&rest[..FRAME_HEADER_BYTES]);
            let end = FRAME_HEADER_BYTES + header.length;
            frames.push((header, rest[FRAME_HEADER_BYTES..end].to_vec()));
            rest = &rest[end..];
        }
        frames
    }

    /// Decodes the header blocks in `frames` as h2 would, checking the frame rules.
    fn header_blocks(frames: &[(FrameHeader, Vec<u8>)]) -> Vec<(FrameHeader, Vec<Field>)> {
        let mut decoder = Decoder::new(HPACK_TABLE_BYTES_MAX);
        let mut blocks = Vec::new();
        let mut open: Option<(FrameHeader, Vec<u8>)> = None;
        for (header, payload) in frames {
            assert!(header.length <= FRAME_PAYLOAD_BYTES_MAX, "{header:?}");
            match (header.kind, &mut open) {
                (FRAME_HEADERS, None) => {
                    assert_eq!(header.flags & FLAG_PADDED, 0);
                    let skip = if header.flags & FLAG_PRIORITY != 0 {
                        PRIORITY_BYTES
                    } else {
                        0
                    };
                    open = Some((*header, payload[skip..].to_vec()));
                }
                (FRAME_CONTINUATION, Some((first, fragments))) => {
                    assert_eq!(header.stream_id, first.stream_id);
                    assert_eq!(header.flags & !FLAG_END_HEADERS, 0);
                    fragments.extend_from_slice(payload);
                }
                (_, None) => continue,
                (kind, Some(_)) => panic!("frame type {kind} inside a header block"),
            }
            if header.flags & FLAG_END_HEADERS != 0 {
                let (first, fragments) = open.take().unwrap();
                let fields = decoder.decode(&fragments, usize::MAX).unwrap();
                blocks.push((first, fields));
            }
        }
        assert!(open.is_none(), "unfinished header block");
        assert_eq!(decoder.decode(&[0xbe], usize::MAX).ok(), None, "table used");
        blocks
    }

    #[test]
    fn an_ordinary_authority_passes_through_byte_for_byte() {
        let input = connection("127.0.0.1:2379");
        for chunk in [1, 7, 64, input.len()] {
            assert_eq!(rewrite(&input, chunk).unwrap(), input, "chunks of {chunk}");
        }
        let mut rewriter = Rewriter::new();
        rewriter.input.extend_from_slice(&input);
        rewriter.process().unwrap();
        assert_eq!(rewriter.mode, Mode::PassThrough);
    }

    /// The bug: etcdctl's `endpoint status --cluster` sent `http://127.0.0.1:2379` as the
    /// authority and h2 reset every stream with PROTOCOL_ERROR.
    #[test]
    fn a_url_authority_loses_its_scheme_and_nothing_else_changes() {
        let input = connection("http://127.0.0.1:2379");
        let output = rewrite(&input, input.len()).unwrap();
        for chunk in [1, 7, 64] {
            assert_eq!(rewrite(&input, chunk).unwrap(), output, "chunks of {chunk}");
        }
        let frames = frames(&output);
        let blocks = header_blocks(&frames);
        assert_eq!(blocks.len(), 2);
        for (header, fields) in &blocks {
            assert_eq!(fields, &expected_fields("127.0.0.1:2379"), "{header:?}");
            assert!(header.flags & FLAG_END_STREAM != 0 || header.stream_id == 1);
        }
        // The first block keeps its priority fields, loses its padding, and does not end
        // the stream (its DATA frame does).
        let (first, payload) = &frames[2];
        assert_eq!(first.kind, FRAME_HEADERS);
        assert_eq!(first.flags, FLAG_PRIORITY | FLAG_END_HEADERS);
        assert_eq!(&payload[..PRIORITY_BYTES], &[0x80, 0, 0, 0, 15]);
        // Frames outside header blocks are untouched.
        let kinds: Vec<u8> = frames.iter().map(|(header, _)| header.kind).collect();
        assert_eq!(
            kinds,
            [SETTINGS, WINDOW_UPDATE, FRAME_HEADERS, DATA, FRAME_HEADERS]
        );
        assert_eq!(frames[0].1, [0, 2, 0, 0, 0, 0]);
        assert_eq!(frames[3].1, [0, 0, 0, 0, 0]);
        assert_eq!(frames[3].0.flags, FLAG_END_STREAM);
    }

    #[test]
    fn a_rewritten_block_over_16_kib_is_split_into_continuations() {
        let mut block = first_request("https://node-1.example:2379/");
        // A literal without indexing, of 40,000 bytes, Huffman-free.
        block.extend_from_slice(&[0x00, 0x05]);
        block.extend_from_slice(b"x-big");
        block.extend_from_slice(&[0x7f, 0xc1, 0xb7, 0x02]); // 127 + 65 + 55·128 + 2·16384
        block.extend(std::iter::repeat_n(b'v', 40_000));
        // The client sends it in frames of 10,000 bytes.
        let mut input = PREFACE.to_vec();
        let pieces: Vec<&[u8]> = block.chunks(10_000).collect();
        for (i, piece) in pieces.iter().enumerate() {
            let kind = if i == 0 {
                FRAME_HEADERS
            } else {
                FRAME_CONTINUATION
            };
            let last = if i + 1 == pieces.len() {
                FLAG_END_HEADERS
            } else {
                0
            };
            let end_stream = if i == 0 { FLAG_END_STREAM } else { 0 };
            input.extend(frame(kind, last | end_stream, 5, piece));
        }
        let output = rewrite(&input, 4_096).unwrap();
        let frames = frames(&output);
        let lengths: Vec<usize> = frames.iter().map(|(header, _)| header.length).collect();
        let total: usize = lengths.iter().sum();
        assert_eq!(lengths, [16_384, 16_384, total - 2 * 16_384]);
        let flags: Vec<u8> = frames.iter().map(|(header, _)| header.flags).collect();
        assert_eq!(flags, [FLAG_END_STREAM, 0, FLAG_END_HEADERS]);
        let blocks = header_blocks(&frames);
        let mut expected = expected_fields("node-1.example:2379");
        expected.push(Field {
            name: b"x-big".to_vec(),
            value: vec![b'v'; 40_000],
            never_indexed: false,
        });
        assert_eq!(blocks[0].1, expected);
    }

    /// Once rewriting, a bad block cannot be handed to h2, so it ends the connection.
    #[test]
    fn malformed_input_while_rewriting_is_an_error() {
        let url = connection("http://127.0.0.1:2379");
        let cases: &[(&str, Vec<u8>)] = &[
            (
                "out of range",
                frame(FRAME_HEADERS, FLAG_END_HEADERS, 5, &[0xff, 0x10]),
            ),
            (
                "ends inside",
                frame(FRAME_HEADERS, FLAG_END_HEADERS, 5, &[0x41, 0x10]),
            ),
            (
                "Huffman",
                frame(FRAME_HEADERS, FLAG_END_HEADERS, 5, &[0x41, 0x81, 0x00]),
            ),
            ("padding", frame(FRAME_HEADERS, FLAG_PADDED, 5, &[9, 0x82])),
            ("interrupted", {
                let mut bytes = frame(FRAME_HEADERS, 0, 5, &[0x82]);
                bytes.extend(frame(DATA, 0, 5, &[]));
                bytes
            }),
            ("interrupted", {
                // A CONTINUATION, but of another stream.
                let mut bytes = frame(FRAME_HEADERS, 0, 5, &[0x82]);
                bytes.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 7, &[0x84]));
                bytes
            }),
            ("too large", {
                let mut bytes = frame(FRAME_HEADERS, 0, 5, &[0x82]);
                let fragment = vec![0x82; HEADER_BLOCK_BYTES_MAX / 2];
                for _ in 0..2 {
                    bytes.extend(frame(FRAME_CONTINUATION, 0, 5, &fragment));
                }
                bytes
            }),
        ];
        for (what, bad) in cases {
            let mut input = url.clone();
            input.extend_from_slice(bad);
            let error = rewrite(&input, 1_000).expect_err(what);
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{what}");
            assert!(error.to_string().contains(what), "{what}: {error}");
        }
    }

    /// Before the first block is judged, h2 is shown the bytes as they came and judges
    /// them itself.
    #[test]
    fn anything_unexpected_before_the_first_block_passes_through() {
        let mut bad_block = PREFACE.to_vec();
        bad_block.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &[0xff, 0x10]));
        bad_block.extend(frame(DATA, 0, 1, b"after"));
        let mut interrupted = PREFACE.to_vec();
        interrupted.extend(frame(FRAME_HEADERS, 0, 1, &[0x82]));
        interrupted.extend(frame(SETTINGS, 0, 0, &[]));
        let mut bad_padding = PREFACE.to_vec();
        bad_padding.extend(frame(
            FRAME_HEADERS,
            FLAG_PADDED | FLAG_END_HEADERS,
            1,
            &[7],
        ));
        let mut cut_short = connection("http://127.0.0.1:2379");
        cut_short.truncate(PREFACE.len() + 40);
        for (what, input) in [
            ("HTTP/1.1", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
            ("bad HPACK", bad_block),
            ("interrupted block", interrupted),
            ("bad padding", bad_padding),
            ("end of stream in a block", cut_short),
        ] {
            for chunk in [1, 5, input.len()] {
                assert_eq!(rewrite(&input, chunk).unwrap(), input, "{what}");
            }
        }
    }

    proptest::proptest! {
        /// Whatever follows a URL authority, the rewriter returns; it never panics.
        #[test]
        fn arbitrary_frames_never_panic(
            tail in proptest::collection::vec(0..=255u8, 0..512),
            chunk in 1..64usize,
        ) {
            let mut input = connection("http://127.0.0.1:2379");
            input.extend_from_slice(&tail);
            let _ = rewrite(&input, chunk);
        }
    }

    #[test]
    fn schemes_are_recognised_by_rfc_3986_rules() {
        for (authority, host) in [
            ("http://127.0.0.1:2379", Some("127.0.0.1:2379")),
            ("https://node-1:2379/", Some("node-1:2379")),
            ("unix+x.y-z://h?q", Some("h")),
            ("127.0.0.1:2379", None),
            ("localhost", None),
            ("1http://h", None),
            ("://h", None),
            ("ht tp://h", None),
        ] {
            assert_eq!(
                strip_scheme(authority.as_bytes()),
                host.map(str::as_bytes),
                "{authority}"
            );
        }
    }

    /// Hands out its bytes a few at a time, saying "not yet" in between.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        ready: bool,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.ready = !self.ready;
            if !self.ready {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let end = self
                .bytes
                .len()
                .min(self.at + 13)
                .min(self.at + buf.remaining());
            buf.put_slice(&self.bytes[self.at..end]);
            self.at = end;
            Poll::Ready(Ok(()))
        }
    }

    /// Reads `stream` to its end through a small buffer.
    fn read_all(stream: &mut ClientStream<Trickle>) -> Vec<u8> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut all = Vec::new();
        loop {
            let mut space = [0u8; 10];
            let mut buf = ReadBuf::new(&mut space);
            match Pin::new(&mut *stream).poll_read(&mut cx, &mut buf) {
                Poll::Pending => continue,
                Poll::Ready(result) => result.unwrap(),
            }
            if buf.filled().is_empty() {
                return all;
            }
            all.extend_from_slice(buf.filled());
        }
    }

    #[test]
    fn the_stream_reads_what_the_rewriter_writes() {
        for authority in ["http://127.0.0.1:2379", "127.0.0.1:2379"] {
            let input = connection(authority);
            let mut stream = ClientStream::new(Trickle {
                bytes: input.clone(),
                at: 0,
                ready: false,
            });
            assert_eq!(read_all(&mut stream), rewrite(&input, 1).unwrap());
        }
    }
}
