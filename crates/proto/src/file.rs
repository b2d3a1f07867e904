//! The registry file as Feast writes it: a bare `feast.core.Registry` message, kept
//! here as its raw top-level fields.
//!
//! Objects amora does not change keep their exact bytes, including fields a newer
//! Feast wrote that amora's messages do not know. Only objects amora creates or
//! updates are encoded anew.

use std::collections::BTreeSet;

use prost::Message;

use crate::messages::Timestamp;
use crate::ProtoError;

/// The kinds of top-level registry objects amora indexes by (project, name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    Entity,
    FeatureView,
    FeatureService,
    OnDemandFeatureView,
    DataSource,
    StreamFeatureView,
    Project,
    LabelView,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 8] = [
        ObjectKind::Project,
        ObjectKind::DataSource,
        ObjectKind::Entity,
        ObjectKind::FeatureView,
        ObjectKind::OnDemandFeatureView,
        ObjectKind::StreamFeatureView,
        ObjectKind::LabelView,
        ObjectKind::FeatureService,
    ];

    /// The field number in `feast.core.Registry`.
    pub fn tag(self) -> u32 {
        match self {
            ObjectKind::Entity => 1,
            ObjectKind::FeatureView => 6,
            ObjectKind::FeatureService => 7,
            ObjectKind::OnDemandFeatureView => 8,
            ObjectKind::DataSource => 12,
            ObjectKind::StreamFeatureView => 14,
            ObjectKind::Project => 17,
            ObjectKind::LabelView => 19,
        }
    }

    pub fn from_tag(tag: u32) -> Option<ObjectKind> {
        ObjectKind::ALL.into_iter().find(|k| k.tag() == tag)
    }

    /// The words Feast's plan output uses.
    pub fn label(self) -> &'static str {
        match self {
            ObjectKind::Entity => "entity",
            ObjectKind::FeatureView => "feature view",
            ObjectKind::FeatureService => "feature service",
            ObjectKind::OnDemandFeatureView => "on demand feature view",
            ObjectKind::DataSource => "data source",
            ObjectKind::StreamFeatureView => "stream feature view",
            ObjectKind::Project => "project",
            ObjectKind::LabelView => "label view",
        }
    }
}

const SCHEMA_VERSION: u32 = 3;
const VERSION_ID: u32 = 4;
const LAST_UPDATED: u32 = 5;

/// One top-level field, exactly as it was in the file (key and payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawField {
    pub tag: u32,
    /// The whole field: key, length (for length-delimited fields) and payload.
    pub bytes: Vec<u8>,
    payload_start: usize,
}

impl RawField {
    pub fn payload(&self) -> &[u8] {
        &self.bytes[self.payload_start..]
    }

    /// A length-delimited field holding `msg`.
    pub fn message(tag: u32, msg: &impl Message) -> RawField {
        let mut bytes = Vec::with_capacity(msg.encoded_len() + 8);
        prost::encoding::message::encode(tag, msg, &mut bytes);
        let payload_start = bytes.len() - msg.encoded_len();
        RawField { tag, bytes, payload_start }
    }

    fn string(tag: u32, s: &str) -> RawField {
        let mut bytes = Vec::new();
        prost::encoding::string::encode(tag, &s.to_string(), &mut bytes);
        let payload_start = bytes.len() - s.len();
        RawField { tag, bytes, payload_start }
    }

    /// Decodes the payload as a message of type `T`.
    pub fn decode<T: Message + Default>(&self) -> Result<T, prost::DecodeError> {
        T::decode(self.payload())
    }

    /// `(project, name)` of the object this field holds, if it is one amora indexes.
    pub fn key(&self) -> Option<(ObjectKind, String, String)> {
        let kind = ObjectKind::from_tag(self.tag)?;
        let (project, name) = match kind {
            ObjectKind::Entity => {
                let e: EntityKey = self.decode().ok()?;
                let s = e.spec.unwrap_or_default();
                (s.project, s.name)
            }
            ObjectKind::DataSource => {
                let s: crate::messages::NamedSource = self.decode().ok()?;
                (s.project, s.name)
            }
            ObjectKind::Project => {
                let p: crate::messages::NamedObject = self.decode().ok()?;
                let name = p.spec.unwrap_or_default().name;
                (name.clone(), name)
            }
            _ => {
                let o: crate::messages::NamedObject = self.decode().ok()?;
                let s = o.spec.unwrap_or_default();
                (s.project, s.name)
            }
        };
        Some((kind, project, name))
    }
}

#[derive(Clone, PartialEq, Message)]
struct EntityKey {
    #[prost(message, optional, tag = "1")]
    spec: Option<EntityKeySpec>,
}

#[derive(Clone, PartialEq, Message)]
struct EntityKeySpec {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "9")]
    project: String,
}

/// A registry file as a list of raw top-level fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistryFile {
    pub fields: Vec<RawField>,
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, ProtoError> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos).ok_or_else(|| ProtoError::Malformed(format!("truncated varint at byte {pos}")))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(ProtoError::Malformed(format!("varint too long at byte {pos}")))
}

impl RegistryFile {
    /// Splits a serialized `feast.core.Registry` into its top-level fields.
    pub fn parse(buf: &[u8]) -> Result<RegistryFile, ProtoError> {
        let mut fields = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            let start = pos;
            let key = read_varint(buf, &mut pos)?;
            let tag = u32::try_from(key >> 3)
                .map_err(|_| ProtoError::Malformed(format!("bad field number at byte {start}")))?;
            if tag == 0 {
                return Err(ProtoError::Malformed(format!("field number 0 at byte {start}")));
            }
            let payload_start;
            match key & 7 {
                0 => {
                    payload_start = pos - start;
                    read_varint(buf, &mut pos)?;
                }
                1 => {
                    payload_start = pos - start;
                    pos += 8;
                }
                2 => {
                    let len = read_varint(buf, &mut pos)?;
                    payload_start = pos - start;
                    pos = pos
                        .checked_add(usize::try_from(len).map_err(|_| ProtoError::Malformed("length overflow".into()))?)
                        .ok_or_else(|| ProtoError::Malformed("length overflow".into()))?;
                }
                5 => {
                    payload_start = pos - start;
                    pos += 4;
                }
                w => return Err(ProtoError::Malformed(format!("unsupported wire type {w} at byte {start}"))),
            }
            if pos > buf.len() {
                return Err(ProtoError::Malformed(format!(
                    "field {tag} at byte {start} runs past the end of the file"
                )));
            }
            fields.push(RawField { tag, bytes: buf[start..pos].to_vec(), payload_start });
        }
        let file = RegistryFile { fields };
        // Decode every object amora indexes once, so a corrupt file fails here, whole.
        for (i, f) in file.fields.iter().enumerate() {
            if let Some(kind) = ObjectKind::from_tag(f.tag) {
                if f.key().is_none() {
                    return Err(ProtoError::Malformed(format!(
                        "top-level field #{i} ({}) does not decode",
                        kind.label()
                    )));
                }
            }
        }
        Ok(file)
    }

    /// Serializes the fields in field-number order (stable within a number), as Feast does.
    pub fn encode(&self) -> Vec<u8> {
        let mut order: Vec<&RawField> = self.fields.iter().collect();
        order.sort_by_key(|f| f.tag);
        let mut out = Vec::with_capacity(order.iter().map(|f| f.bytes.len()).sum());
        for f in order {
            out.extend_from_slice(&f.bytes);
        }
        out
    }

    pub fn version_id(&self) -> String {
        self.fields
            .iter()
            .rfind(|f| f.tag == VERSION_ID)
            .map(|f| String::from_utf8_lossy(f.payload()).into_owned())
            .unwrap_or_default()
    }

    pub fn last_updated(&self) -> Option<Timestamp> {
        self.fields.iter().rfind(|f| f.tag == LAST_UPDATED).and_then(|f| f.decode().ok())
    }

    /// Sets `registry_schema_version = "1"`, `version_id` and `last_updated`, as every write does.
    pub fn stamp(&mut self, version_id: &str, now: Timestamp) {
        self.fields.retain(|f| ![SCHEMA_VERSION, VERSION_ID, LAST_UPDATED].contains(&f.tag));
        self.fields.push(RawField::string(SCHEMA_VERSION, "1"));
        self.fields.push(RawField::string(VERSION_ID, version_id));
        self.fields.push(RawField::message(LAST_UPDATED, &now));
    }

    /// The projects that own at least one object or have a Project entry.
    pub fn project_names(&self) -> BTreeSet<String> {
        self.fields.iter().filter_map(RawField::key).map(|(_, p, _)| p).filter(|p| !p.is_empty()).collect()
    }

    /// The raw fields of one project's objects of `kind`.
    pub fn objects<'a>(
        &'a self,
        kind: ObjectKind,
        project: &'a str,
    ) -> impl Iterator<Item = (String, &'a RawField)> + 'a {
        self.fields.iter().filter(move |f| f.tag == kind.tag()).filter_map(move |f| {
            let (_, p, name) = f.key()?;
            (p == project).then_some((name, f))
        })
    }

    /// Decodes every object of `kind` in `project`.
    pub fn decode_all<T: Message + Default>(&self, kind: ObjectKind, project: &str) -> Result<Vec<T>, ProtoError> {
        self.objects(kind, project)
            .map(|(_, f)| f.decode().map_err(|source| ProtoError::Object { kind: kind.label(), offset: 0, source }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::*;

    fn entity(project: &str, name: &str) -> Entity {
        Entity {
            spec: Some(EntitySpecV2 {
                name: name.into(),
                project: project.into(),
                join_key: name.into(),
                value_type: 2,
                ..Default::default()
            }),
            meta: None,
        }
    }

    #[test]
    fn round_trips_bytes_and_keeps_unknown_fields() {
        let mut f = RegistryFile::default();
        f.fields.push(RawField::message(1, &entity("p", "driver")));
        f.stamp("abc", Timestamp { seconds: 5, nanos: 0 });
        // An unknown top-level field (as a newer Feast might add) and an unknown field inside an entity.
        let mut unknown = Vec::new();
        prost::encoding::string::encode(99, &"future".to_string(), &mut unknown);
        let mut with_extra = entity("q", "rider").encode_to_vec();
        prost::encoding::string::encode(77, &"extra".to_string(), &mut with_extra);
        let mut bytes = f.encode();
        bytes.extend_from_slice(&unknown);
        prost::encoding::bytes::encode(1, &with_extra, &mut bytes);
        let parsed = RegistryFile::parse(&bytes).unwrap();
        assert_eq!(parsed.version_id(), "abc");
        assert_eq!(parsed.last_updated(), Some(Timestamp { seconds: 5, nanos: 0 }));
        let again = parsed.encode();
        let reparsed = RegistryFile::parse(&again).unwrap();
        assert!(again.windows(6).any(|w| w == b"future"));
        assert!(again.windows(5).any(|w| w == b"extra"));
        assert_eq!(reparsed.objects(ObjectKind::Entity, "q").count(), 1);
        assert_eq!(reparsed.project_names().into_iter().collect::<Vec<_>>(), vec!["p", "q"]);
    }

    #[test]
    fn rejects_garbage() {
        assert!(RegistryFile::parse(&[0x0a, 0x05, 1]).is_err());
        assert!(RegistryFile::parse(&[0x0b]).is_err());
        assert!(RegistryFile::parse(b"hello world").is_err());
    }
}
