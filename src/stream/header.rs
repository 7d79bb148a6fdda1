//! The stream header as the reader reports it.

/// The opening `<stream:stream>` tag of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    pub(super) attrs: Vec<(String, String)>,
    pub(super) default_ns: String,
}

impl StreamHeader {
    /// The value of attribute `name` (qualified as written for `xml:lang`).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// All attributes (namespace declarations excluded).
    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The default namespace declared on the header (`jabber:client`, `jabber:server`, ...),
    /// or `""` if none was declared.
    pub fn default_ns(&self) -> &str {
        &self.default_ns
    }

    /// The `to` attribute.
    pub fn to(&self) -> Option<&str> {
        self.attr("to")
    }

    /// The `from` attribute.
    pub fn from(&self) -> Option<&str> {
        self.attr("from")
    }

    /// The `version` attribute.
    pub fn version(&self) -> Option<&str> {
        self.attr("version")
    }

    /// The `id` attribute.
    pub fn id(&self) -> Option<&str> {
        self.attr("id")
    }

    /// The `xml:lang` attribute.
    pub fn lang(&self) -> Option<&str> {
        self.attr("xml:lang")
    }
}
