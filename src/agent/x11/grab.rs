//! Screen reading: the root window read into the MIT-SHM segment (or over the socket),
//! excluded windows blacked out, the XFIXES pointer drawn, and the result encoded.

use std::time::Instant;

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{self, ConnectionExt as _, ImageFormat};
use x11rb::protocol::{shm, xfixes};

use super::shm_segment::Shm;
use super::{X11Session, x_err};
use crate::agent::screen::{self, BGRX, Capture, Cursor, Encoder, Pixels};

impl X11Session {
    /// The screen read into shared memory (MIT-SHM), or `None` when this server cannot or
    /// the screen is not busy (then it is read over the socket). The segment is made at the
    /// first read of a busy screen (one read a moment before: `shm_busy`) and again when the
    /// screen grows, so a session that changes once and stays still (an idle desktop's
    /// keyframe) never holds a screen-sized segment: on a host of many sessions their
    /// segments were most of the agent's memory.
    fn shm_read(&mut self, width: usize, height: usize) -> Result<Option<&mut [u8]>, String> {
        let need = width * height * 4;
        if !self.shm_usable || (self.shm.is_none() && !self.shm_busy) {
            return Ok(None);
        }
        if self.shm.as_ref().is_none_or(|s| s.len < need) {
            self.release_shm()?;
            match Shm::attach(&self.conn, need) {
                Ok(s) => self.shm = Some(s),
                Err(e) => {
                    tracing::info!(display = %self.spec.name(), reason = %e, "MIT-SHM not usable: the screen is read over the socket");
                    self.shm_usable = false;
                    return Ok(None);
                }
            }
        }
        let shm = self.shm.as_mut().expect("attached above");
        shm::get_image(
            &self.conn,
            self.root,
            0,
            0,
            width as u16,
            height as u16,
            !0,
            ImageFormat::Z_PIXMAP.into(),
            shm.seg,
            0,
        )
        .map_err(x_err)?
        .reply()
        .map_err(x_err)?;
        Ok(Some(&mut shm.bytes()[..need]))
    }

    /// Unmap the shared segment and have the server let go of it (it keeps it until the
    /// connection closes otherwise): its memory is freed.
    pub(super) fn release_shm(&mut self) -> Result<(), String> {
        if let Some(old) = self.shm.take() {
            shm::detach(&self.conn, old.seg).map_err(x_err)?;
            self.conn.flush().map_err(x_err)?;
        }
        Ok(())
    }

    /// The pointer's image and place, when it is drawn.
    pub(super) fn cursor(&self) -> Result<Option<xfixes::GetCursorImageReply>, String> {
        if !(self.config.cursor && self.xfixes) {
            return Ok(None);
        }
        Ok(xfixes::get_cursor_image(&self.conn)
            .map_err(x_err)?
            .reply()
            .ok())
    }

    /// Read the screen, black out excluded windows, draw the pointer, and encode what changed.
    /// On the common server (32-bit little-endian BGRX) with MIT-SHM and no scaling, all of it
    /// happens in the shared segment: no copy of the screen is made or kept.
    pub(super) fn grab(
        &mut self,
        width: usize,
        height: usize,
        pointer: Option<&xfixes::GetCursorImageReply>,
        encoder: &mut Encoder,
    ) -> Result<Option<screen::Encoded>, String> {
        // The excluded windows' areas are read before and after the pixels and both are
        // blacked out: a window mapped or moved while the screen was read is covered too.
        let mut areas = self.excluded_areas()?;
        let pointer = pointer.map(cursor);
        let bgrx = self.conn.setup().image_byte_order == xproto::ImageOrder::LSB_FIRST
            && (self.red_shift, self.green_shift, self.blue_shift) == (16, 8, 0);
        let max = self.config.max_width as usize;
        if bgrx && (max == 0 || width <= max) && self.shm_read(width, height)?.is_some() {
            areas.extend(self.excluded_areas()?);
            let shm = self.shm.as_mut().expect("read into above");
            let data = &mut shm.bytes()[..width * height * 4];
            let mut px = Pixels {
                width,
                height,
                bpp: 4,
                order: BGRX,
                data,
            };
            for a in areas {
                px.black_out(a);
            }
            if let Some(c) = &pointer {
                px.draw_cursor(c);
            }
            return Ok(encoder.encode(&px, Instant::now()));
        }
        let mut shot = self.capture_rgb(width, height)?;
        areas.extend(self.excluded_areas()?);
        for a in areas {
            shot.black_out(a);
        }
        if let Some(c) = &pointer {
            shot.draw_cursor(c);
        }
        let mut shot = shot.fit(max);
        Ok(encoder.encode(&shot.pixels(), Instant::now()))
    }

    /// The screen as RGB (scaling, or a server with other pixels or without MIT-SHM).
    fn capture_rgb(&mut self, width: usize, height: usize) -> Result<Capture, String> {
        let need = width * height * 4;
        let (r, g, b) = (self.red_shift, self.green_shift, self.blue_shift);
        let little = self.conn.setup().image_byte_order == xproto::ImageOrder::LSB_FIRST;
        let over_socket;
        let data: &[u8] = match self.shm_read(width, height)? {
            Some(shared) => shared,
            None => {
                over_socket = self
                    .conn
                    .get_image(
                        ImageFormat::Z_PIXMAP,
                        self.root,
                        0,
                        0,
                        width as u16,
                        height as u16,
                        !0,
                    )
                    .map_err(x_err)?
                    .reply()
                    .map_err(x_err)?
                    .data;
                &over_socket
            }
        };
        if data.len() != need {
            return Err(format!(
                "{} bytes for {width}×{height} pixels; only 32-bit pixels are recorded",
                data.len()
            ));
        }
        let mut rgb = vec![0u8; width * height * 3];
        for (d, px) in rgb.chunks_exact_mut(3).zip(data.chunks_exact(4)) {
            let v = if little {
                u32::from_le_bytes(px.try_into().expect("4 bytes"))
            } else {
                u32::from_be_bytes(px.try_into().expect("4 bytes"))
            };
            d.copy_from_slice(&[(v >> r) as u8, (v >> g) as u8, (v >> b) as u8]);
        }
        Ok(Capture { width, height, rgb })
    }
}

/// XFIXES' cursor image (premultiplied ARGB) as the RGBA `draw_cursor` blends.
fn cursor(c: &xfixes::GetCursorImageReply) -> Cursor {
    let mut rgba = Vec::with_capacity(c.cursor_image.len() * 4);
    for &p in &c.cursor_image {
        let a = p >> 24;
        let un = |v: u32| {
            (v * 255 + a / 2)
                .checked_div(a)
                .map_or(0, |c| c.min(255) as u8)
        };
        rgba.extend_from_slice(&[
            un((p >> 16) & 0xff),
            un((p >> 8) & 0xff),
            un(p & 0xff),
            a as u8,
        ]);
    }
    Cursor {
        x: c.x as i32 - c.xhot as i32,
        y: c.y as i32 - c.yhot as i32,
        width: c.width as usize,
        height: c.height as usize,
        rgba,
    }
}
