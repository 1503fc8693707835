//! JSON text that is known to hold one value.

use bytes::Bytes;

/// Text that holds exactly one JSON value, by construction: serialised
/// here, checked by [`JsonText::parse`], or (within this crate) taken from
/// a parser that has just read it whole. The store writes it as it is,
/// without checking it again. It may share the buffer it was read from
/// (a device report is a slice of its request's body, not a copy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonText(Bytes);

impl JsonText {
    /// Checks that `text` is one JSON value (whitespace around it allowed).
    pub fn parse(text: impl Into<String>) -> Result<JsonText, serde_json::Error> {
        let text = text.into();
        serde_json::from_str::<serde::de::IgnoredAny>(&text)?;
        Ok(JsonText(Bytes::from(text)))
    }

    /// `value` serialised.
    pub fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<JsonText, serde_json::Error> {
        serde_json::to_string(value).map(|text| JsonText(Bytes::from(text)))
    }

    /// Text the caller has just read whole with `serde_json` (which refuses
    /// anything but one value).
    pub(crate) fn read_whole(text: String) -> JsonText {
        JsonText(Bytes::from(text))
    }

    /// Like [`JsonText::read_whole`], for text that is a slice of `buffer`:
    /// the two share it.
    pub(crate) fn read_whole_in(buffer: &Bytes, text: &str) -> JsonText {
        JsonText(buffer.slice_ref(text.as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        // Every constructor takes a `str`; checking again costs a fraction
        // of a microsecond per KiB and keeps this module free of `unsafe`.
        std::str::from_utf8(&self.0).expect("a JsonText holds UTF-8")
    }

    pub fn into_string(self) -> String {
        self.as_str().to_string()
    }
}
