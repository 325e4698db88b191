//! QR images of a ticket's `qr_content`, as PNG and SVG.

use image::{ImageEncoder, Luma};
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

/// Smallest and largest image sides a caller may ask for, in pixels.
pub const MIN_SIZE: u32 = 64;
pub const MAX_SIZE: u32 = 1024;
pub const DEFAULT_SIZE: u32 = 256;

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("content does not fit a QR code: {0}")]
    Encode(#[from] qrcode::types::QrError),
    #[error("png encoding failed: {0}")]
    Png(#[from] image::ImageError),
}

fn code(content: &str) -> Result<QrCode, QrError> {
    // M survives a scuffed screen or a glare and keeps a short URL at a
    // low version (fewer, larger modules scan faster).
    Ok(QrCode::with_error_correction_level(
        content.as_bytes(),
        EcLevel::M,
    )?)
}

/// A PNG at least `size` pixels wide (rounded to whole modules).
pub fn png(content: &str, size: u32) -> Result<Vec<u8>, QrError> {
    let img = code(content)?
        .render::<Luma<u8>>()
        .min_dimensions(size, size)
        .quiet_zone(true)
        .build();
    let mut out = Vec::with_capacity(2048);
    image::codecs::png::PngEncoder::new_with_quality(
        &mut out,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::NoFilter,
    )
    .write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::L8,
    )?;
    Ok(out)
}

/// An SVG at least `size` pixels wide.
pub fn svg(content: &str, size: u32) -> Result<String, QrError> {
    Ok(code(content)?
        .render::<svg::Color<'_>>()
        .min_dimensions(size, size)
        .quiet_zone(true)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build())
}

/// A requested size clamped to what we render.
pub fn clamp_size(requested: Option<u32>) -> u32 {
    requested.unwrap_or(DEFAULT_SIZE).clamp(MIN_SIZE, MAX_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_decodes_back_to_its_content() {
        let content = "http://127.0.0.1:8080/m/AbCdEfGhIjKlMnOpQrStUvWx";
        let bytes = png(content, 256).unwrap();
        let img = image::load_from_memory(&bytes).unwrap().to_luma8();
        assert!(img.width() >= 256);
        let mut prepared = rqrr::PreparedImage::prepare(img);
        let grids = prepared.detect_grids();
        assert_eq!(grids.len(), 1);
        assert_eq!(grids[0].decode().unwrap().1, content);
    }

    #[test]
    fn svg_is_an_svg_document() {
        let s = svg("hello", 128).unwrap();
        assert!(s.contains("<svg") && s.contains("</svg>"));
    }

    #[test]
    fn sizes_are_bounded() {
        assert_eq!(clamp_size(Some(1)), MIN_SIZE);
        assert_eq!(clamp_size(Some(1_000_000)), MAX_SIZE);
        assert_eq!(clamp_size(None), DEFAULT_SIZE);
    }
}
