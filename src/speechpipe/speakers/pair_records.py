"""The pair record the trainer reads (speechpipe.speakers.pair_dataset): a tf.train.Example
{label, utterance_a, utterance_b}, framed as TFRecord, encoded and decoded here without
TensorFlow, so that the Beam workers of the pair job stay light (a worker that imports
TensorFlow costs seconds and hundreds of MB)."""

from __future__ import annotations

from typing import Dict, Iterable, Iterator, List, Tuple

SAME = 1  # label of a same-speaker pair, as in VoxCeleb's trial lists
DIFFERENT = 0
LABEL_KEY = "label"
UTTERANCE_A_KEY = "utterance_a"
UTTERANCE_B_KEY = "utterance_b"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_SMALL_VARINTS = tuple(_varint(n) for n in range(1 << 14))  # every length a pair record has


def _length(value: int) -> bytes:
    return _SMALL_VARINTS[value] if value < 16384 else _varint(value)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2) whose tag byte is `tag`."""
    return tag + _length(len(payload)) + payload


_T1, _T2, _T3 = b"\x0a", b"\x12", b"\x1a"  # field 1, 2 and 3, wire type 2


def _feature_entry(key: bytes, feature: bytes) -> bytes:
    # Features.feature is map<string, Feature>: repeated entries {1: key, 2: value}
    return _field(_T1, _field(_T1, key) + _field(_T2, feature))


def _bytes_feature(value: bytes) -> bytes:
    return _field(_T1, _field(_T1, value))  # Feature.bytes_list(1) -> BytesList.value(1)


_LABEL_ENTRIES = {  # Feature.int64_list(3) -> Int64List.value(1), packed
    label: _feature_entry(LABEL_KEY.encode(), _field(_T3, _field(_T1, _varint(label)))) for label in (SAME, DIFFERENT)
}
_KEY_A, _KEY_B = UTTERANCE_A_KEY.encode(), UTTERANCE_B_KEY.encode()


def encode_pair_example(label: int, utterance_a: str, utterance_b: str) -> bytes:
    """A serialized tf.train.Example {label: int64, utterance_a: bytes, utterance_b: bytes}.

    Written by hand (the wire format is fixed) because building 10 million protos through
    tf.train.Example costs more than drawing the pairs; tests check it against TensorFlow."""
    features = (
        _LABEL_ENTRIES[label]
        + _feature_entry(_KEY_A, _bytes_feature(utterance_a.encode()))
        + _feature_entry(_KEY_B, _bytes_feature(utterance_b.encode()))
    )
    return _field(_T1, features)


def _crc32c_function():
    try:
        import google_crc32c

        return google_crc32c.value
    except ImportError:  # crcmod comes with Beam; slower, same result
        import crcmod.predefined

        return crcmod.predefined.mkPredefinedCrcFun("crc-32c")


_crc32c = _crc32c_function()


def _masked_crc(data: bytes) -> bytes:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8 & 0xFFFFFFFF).to_bytes(4, "little")


def tfrecord_frame(record: bytes) -> bytes:
    """One TFRecord: length (uint64 LE), its masked CRC-32C, the data, the data's masked CRC."""
    length = len(record).to_bytes(8, "little")
    return length + _masked_crc(length) + record + _masked_crc(record)


def encode_pair_block(pairs: Iterable[Tuple[int, str, str]]) -> bytes:
    """Framed TFRecords of (label, utterance_a, utterance_b) pairs, back to back: what a
    TFRecord file holds, so blocks can be written as they are (see pairs_job.PairRecordSink)."""
    return b"".join(tfrecord_frame(encode_pair_example(label, a, b)) for label, a, b in pairs)


def decode_pair_block(block: bytes) -> List[bytes]:
    """The records of a block (checksums verified): for tests and tools."""
    records = []
    position = 0
    while position < len(block):
        length_bytes = block[position : position + 8]
        if len(length_bytes) < 8 or block[position + 8 : position + 12] != _masked_crc(length_bytes):
            raise ValueError(f"corrupt TFRecord length at byte {position}")
        length = int.from_bytes(length_bytes, "little")
        record = block[position + 12 : position + 12 + length]
        if len(record) != length or block[position + 12 + length : position + 16 + length] != _masked_crc(record):
            raise ValueError(f"corrupt TFRecord data at byte {position}")
        records.append(record)
        position += 16 + length
    return records


def _read_varint(data: bytes, position: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data):
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position


def _message_fields(data: bytes) -> Iterator[Tuple[int, int, object]]:
    """(field number, wire type, value) of a protobuf message: varints and length-delimited
    fields only, which is all a pair Example holds."""
    position = 0
    while position < len(data):
        key, position = _read_varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _read_varint(data, position)
            yield number, wire, value
        elif wire == 2:
            length, position = _read_varint(data, position)
            if position + length > len(data):
                raise ValueError("truncated field")
            yield number, wire, data[position : position + length]
            position += length
        else:
            raise ValueError(f"unexpected wire type {wire}")


def decode_pair_example(record: bytes) -> Tuple[int, str, str]:
    """(label, utterance_a, utterance_b) of a pair Example, without TensorFlow (tests, tools)."""
    values: Dict[str, object] = {}
    for number, _, features in _message_fields(record):
        if number != 1:
            continue
        for _, _, entry in _message_fields(features):  # map entries
            key, feature = None, b""
            for n, _, v in _message_fields(entry):
                if n == 1:
                    key = v.decode("utf-8")
                elif n == 2:
                    feature = v
            for kind, _, payload in _message_fields(feature):
                if kind == 1:  # BytesList
                    values[key] = [v.decode("utf-8") for n, _, v in _message_fields(payload) if n == 1]
                elif kind == 3:  # Int64List, packed or not
                    ints: List[int] = []
                    for _field, wire, v in _message_fields(payload):
                        if wire == 0:
                            ints.append(v)
                        else:
                            p = 0
                            while p < len(v):
                                x, p = _read_varint(v, p)
                                ints.append(x)
                    values[key] = ints
    try:
        (label,), (a,), (b,) = values[LABEL_KEY], values[UTTERANCE_A_KEY], values[UTTERANCE_B_KEY]
    except (KeyError, ValueError):
        raise ValueError(f"not a pair Example: keys {sorted(values)}") from None
    return int(label), a, b


def read_pair_file(path: str) -> List[Tuple[int, str, str]]:
    """Every (label, utterance_a, utterance_b) of one of the job's pair files (GZIP TFRecord),
    without TensorFlow: for tests and tools. The trainer reads them with pair_dataset. `path` is
    local, or a URI read through Beam's FileSystems (which the pair job writes with)."""
    import gzip

    from speechpipe.io.storage import is_uri

    if is_uri(path):
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path, compression_type=CompressionTypes.GZIP) as f:
            return [decode_pair_example(record) for record in decode_pair_block(f.read())]
    with gzip.open(path, "rb") as f:
        return [decode_pair_example(record) for record in decode_pair_block(f.read())]
