package cli

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// cxxText renders m the way the C++ protobuf library's
// TextFormat::PrintToString does with its default printer: set fields in
// field-number order, one per line, nested messages as "name {" blocks
// indented by two spaces, enum values by name, strings and bytes in double
// quotes with C escaping (CEscape: \n \r \t \" \' \\ and octal for other
// bytes outside 0x20-0x7e), unknown fields last by number.
//
// The original client hashes this text to name rules, and prints it for
// "request --stdout", "-v" and "dump", so it must stay byte-stable. Go's
// prototext output is deliberately unstable and is never used for output.
func cxxText(m proto.Message) string {
	var b strings.Builder
	writeMessage(&b, m.ProtoReflect(), 0)
	return b.String()
}

func writeMessage(b *strings.Builder, m protoreflect.Message, indent int) {
	fields := m.Descriptor().Fields()
	ordered := make([]protoreflect.FieldDescriptor, 0, fields.Len())
	for i := 0; i < fields.Len(); i++ {
		ordered = append(ordered, fields.Get(i))
	}
	sort.Slice(ordered, func(i, j int) bool { return ordered[i].Number() < ordered[j].Number() })
	for _, fd := range ordered {
		if !m.Has(fd) {
			continue
		}
		v := m.Get(fd)
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				writeField(b, fd, l.Get(i), indent)
			}
		case fd.IsMap():
			// The Butterfly protocol has no maps; print entries as the C++
			// library does (repeated key/value messages), sorted by key text.
			mp := v.Map()
			type entry struct {
				k protoreflect.MapKey
				v protoreflect.Value
			}
			var es []entry
			mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
				es = append(es, entry{k, v})
				return true
			})
			sort.Slice(es, func(i, j int) bool { return es[i].k.String() < es[j].k.String() })
			for _, e := range es {
				pad(b, indent)
				b.WriteString(fd.TextName())
				b.WriteString(" {\n")
				writeField(b, fd.MapKey(), e.k.Value(), indent+2)
				writeField(b, fd.MapValue(), e.v, indent+2)
				pad(b, indent)
				b.WriteString("}\n")
			}
		default:
			writeField(b, fd, v, indent)
		}
	}
	writeUnknown(b, m.GetUnknown(), indent)
}

func pad(b *strings.Builder, indent int) {
	for i := 0; i < indent; i++ {
		b.WriteByte(' ')
	}
}

func writeField(b *strings.Builder, fd protoreflect.FieldDescriptor, v protoreflect.Value, indent int) {
	pad(b, indent)
	b.WriteString(fd.TextName())
	if fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
		b.WriteString(" {\n")
		writeMessage(b, v.Message(), indent+2)
		pad(b, indent)
		b.WriteString("}\n")
		return
	}
	b.WriteString(": ")
	writeScalar(b, fd, v)
	b.WriteByte('\n')
}

func writeScalar(b *strings.Builder, fd protoreflect.FieldDescriptor, v protoreflect.Value) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		b.WriteString(strconv.FormatBool(v.Bool()))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		b.WriteString(strconv.FormatInt(v.Int(), 10))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind,
		protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		b.WriteString(strconv.FormatUint(v.Uint(), 10))
	case protoreflect.FloatKind:
		b.WriteString(cxxFloat(v.Float(), 32))
	case protoreflect.DoubleKind:
		b.WriteString(cxxFloat(v.Float(), 64))
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			b.WriteString(string(ev.Name()))
		} else {
			b.WriteString(strconv.FormatInt(int64(v.Enum()), 10))
		}
	case protoreflect.StringKind:
		writeQuoted(b, v.String())
	case protoreflect.BytesKind:
		writeQuoted(b, string(v.Bytes()))
	}
}

// cxxFloat prints like the C++ library's SimpleFtoa/SimpleDtoa: the
// shortest text that reads back to the same value, and inf/-inf/nan.
func cxxFloat(f float64, bits int) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsNaN(f):
		return "nan"
	}
	return strconv.FormatFloat(f, 'g', -1, bits)
}

// writeQuoted writes s in double quotes with the C++ library's CEscape rules.
func writeQuoted(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '"':
			b.WriteString(`\"`)
		case '\'':
			b.WriteString(`\'`)
		case '\\':
			b.WriteString(`\\`)
		default:
			if c < 0x20 || c >= 0x7f {
				fmt.Fprintf(b, "\\%03o", c)
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
}

// writeUnknown prints unknown fields as the C++ printer does: by number,
// varints in decimal, fixed-width values in hex, length-delimited values
// as nested messages when they parse as such, else as quoted bytes.
func writeUnknown(b *strings.Builder, raw protoreflect.RawFields, indent int) {
	for len(raw) > 0 {
		num, typ, n := protowire.ConsumeTag(raw)
		if n < 0 {
			return
		}
		raw = raw[n:]
		pad(b, indent)
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(raw)
			if n < 0 {
				return
			}
			raw = raw[n:]
			fmt.Fprintf(b, "%d: %d\n", num, v)
		case protowire.Fixed32Type:
			v, n := protowire.ConsumeFixed32(raw)
			if n < 0 {
				return
			}
			raw = raw[n:]
			fmt.Fprintf(b, "%d: 0x%08x\n", num, v)
		case protowire.Fixed64Type:
			v, n := protowire.ConsumeFixed64(raw)
			if n < 0 {
				return
			}
			raw = raw[n:]
			fmt.Fprintf(b, "%d: 0x%016x\n", num, v)
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(raw)
			if n < 0 {
				return
			}
			raw = raw[n:]
			if len(v) > 0 && isMessage(v) {
				fmt.Fprintf(b, "%d {\n", num)
				writeUnknown(b, v, indent+2)
				pad(b, indent)
				b.WriteString("}\n")
			} else {
				fmt.Fprintf(b, "%d: ", num)
				writeQuoted(b, string(v))
				b.WriteByte('\n')
			}
		case protowire.StartGroupType:
			v, n := protowire.ConsumeGroup(num, raw)
			if n < 0 {
				return
			}
			raw = raw[n:]
			fmt.Fprintf(b, "%d {\n", num)
			writeUnknown(b, v, indent+2)
			pad(b, indent)
			b.WriteString("}\n")
		default:
			return
		}
	}
}

// isMessage reports whether raw parses completely as protobuf fields.
func isMessage(raw []byte) bool {
	for len(raw) > 0 {
		num, typ, n := protowire.ConsumeTag(raw)
		if n < 0 || num == 0 {
			return false
		}
		raw = raw[n:]
		n = protowire.ConsumeFieldValue(num, typ, raw)
		if n < 0 {
			return false
		}
		raw = raw[n:]
	}
	return true
}
