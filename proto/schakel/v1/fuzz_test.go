package schakelv1_test

import (
	"bytes"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// Every request a node decodes from outside — a peer's PeerService call, an internal API call —
// is one of the input types of the services below. The targets decode arbitrary bytes as each of
// them, in both codecs connect serves (binary protobuf for gRPC, protojson for Connect JSON).
// Size limits are the servers' (connect's ReadMaxBytes in internal/api and internal/network),
// applied before decoding.

// fuzzedServices are the services with a Fuzz<Service>Requests target below;
// TestEveryServiceFuzzed fails when a service is added without one.
var fuzzedServices = []protoreflect.FullName{
	"schakel.v1.AccessService",
	"schakel.v1.CredentialService",
	"schakel.v1.DocumentService",
	"schakel.v1.LogService",
	"schakel.v1.NodeService",
	"schakel.v1.OrganizationService",
	"schakel.v1.PeerService",
}

func FuzzPeerServiceRequests(f *testing.F)         { fuzzRequests(f, "schakel.v1.PeerService") }
func FuzzAccessServiceRequests(f *testing.F)       { fuzzRequests(f, "schakel.v1.AccessService") }
func FuzzNodeServiceRequests(f *testing.F)         { fuzzRequests(f, "schakel.v1.NodeService") }
func FuzzOrganizationServiceRequests(f *testing.F) { fuzzRequests(f, "schakel.v1.OrganizationService") }
func FuzzDocumentServiceRequests(f *testing.F)     { fuzzRequests(f, "schakel.v1.DocumentService") }
func FuzzCredentialServiceRequests(f *testing.F)   { fuzzRequests(f, "schakel.v1.CredentialService") }
func FuzzLogServiceRequests(f *testing.F)          { fuzzRequests(f, "schakel.v1.LogService") }

// services returns every service of the schakel.v1 package, from the generated descriptors.
func services() map[protoreflect.FullName]protoreflect.ServiceDescriptor {
	_ = schakelv1.File_schakel_v1_peer_proto // registers the package's files
	out := map[protoreflect.FullName]protoreflect.ServiceDescriptor{}
	protoregistry.GlobalFiles.RangeFilesByPackage("schakel.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			out[sd.FullName()] = sd
		}
		return true
	})
	return out
}

func TestEveryServiceFuzzed(t *testing.T) {
	var got []protoreflect.FullName
	for name := range services() {
		got = append(got, name)
	}
	slices.Sort(got)
	if !slices.Equal(got, fuzzedServices) {
		t.Fatalf("services %v, fuzz targets for %v: add a Fuzz<Service>Requests target for each new service", got, fuzzedServices)
	}
}

// requestTypes returns the input type of every method of a service, in declaration order.
func requestTypes(t testing.TB, service protoreflect.FullName) []protoreflect.MessageType {
	t.Helper()
	sd, ok := services()[service]
	if !ok {
		t.Fatalf("no service %s", service)
	}
	var out []protoreflect.MessageType
	for i := range sd.Methods().Len() {
		md := sd.Methods().Get(i)
		mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
		if err != nil {
			t.Fatalf("%s: request type %s: %v", md.FullName(), md.Input().FullName(), err)
		}
		out = append(out, mt)
	}
	if len(out) == 0 {
		t.Fatalf("service %s has no methods", service)
	}
	return out
}

// fuzzRequests is the target of one service: the input is a method index and the bytes of a
// request. Properties, for every request type in both codecs: no panic; what decodes re-encodes,
// decodes again to an equal message, and (binary) re-encodes to the same bytes; a request decoded
// from one codec means the same in the other (unknown fields aside, which JSON cannot carry).
// Seeds are, per method, a request with every field set, in both encodings, and the empty request.
func fuzzRequests(f *testing.F, service protoreflect.FullName) {
	types := requestTypes(f, service)
	for i, mt := range types {
		m := mt.New()
		populate(m, 0)
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m.Interface())
		if err != nil {
			f.Fatalf("Marshal(%s): %v", mt.Descriptor().FullName(), err)
		}
		j, err := protojson.Marshal(m.Interface())
		if err != nil {
			f.Fatalf("protojson.Marshal(%s): %v", mt.Descriptor().FullName(), err)
		}
		f.Add(uint8(i), b)
		f.Add(uint8(i), j)
		f.Add(uint8(i), []byte{})
	}
	f.Fuzz(func(t *testing.T, method uint8, in []byte) {
		mt := types[int(method)%len(types)]
		checkBinary(t, mt, in)
		checkJSON(t, mt, in)
	})
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// jsonIn decodes as connect's JSON codec does: unknown fields are dropped.
var jsonIn = protojson.UnmarshalOptions{DiscardUnknown: true}

func checkBinary(t *testing.T, mt protoreflect.MessageType, in []byte) {
	name := mt.Descriptor().FullName()
	m := mt.New().Interface()
	if proto.Unmarshal(in, m) != nil {
		return
	}
	b, err := deterministic.Marshal(m)
	if err != nil {
		t.Fatalf("%s: Marshal of a decoded request: %v", name, err)
	}
	again := mt.New().Interface()
	if err := proto.Unmarshal(b, again); err != nil {
		t.Fatalf("%s: Unmarshal of a re-encoded request: %v", name, err)
	}
	if !proto.Equal(m, again) {
		t.Fatalf("%s: binary round trip changed the request:\n%v\n%v", name, m, again)
	}
	if b2, err := deterministic.Marshal(again); err != nil || !bytes.Equal(b, b2) {
		t.Fatalf("%s: re-encoding is not stable: %v", name, err)
	}
	known := proto.Clone(m)
	dropUnknown(known.ProtoReflect())
	j, err := protojson.Marshal(known)
	if err != nil {
		t.Fatalf("%s: protojson.Marshal of a decoded request: %v", name, err)
	}
	fromJSON := mt.New().Interface()
	if err := jsonIn.Unmarshal(j, fromJSON); err != nil {
		t.Fatalf("%s: protojson.Unmarshal of %s: %v", name, j, err)
	}
	if !proto.Equal(known, fromJSON) {
		t.Fatalf("%s: the request means another thing in JSON:\n%v\n%v", name, known, fromJSON)
	}
}

func checkJSON(t *testing.T, mt protoreflect.MessageType, in []byte) {
	name := mt.Descriptor().FullName()
	m := mt.New().Interface()
	if jsonIn.Unmarshal(in, m) != nil {
		return
	}
	j, err := protojson.Marshal(m)
	if err != nil {
		t.Fatalf("%s: protojson.Marshal of a decoded request: %v", name, err)
	}
	again := mt.New().Interface()
	if err := jsonIn.Unmarshal(j, again); err != nil {
		t.Fatalf("%s: protojson.Unmarshal of %s: %v", name, j, err)
	}
	if !proto.Equal(m, again) {
		t.Fatalf("%s: JSON round trip changed the request:\n%v\n%v", name, m, again)
	}
	b, err := deterministic.Marshal(m)
	if err != nil {
		t.Fatalf("%s: Marshal of a request decoded from JSON: %v", name, err)
	}
	fromBinary := mt.New().Interface()
	if err := proto.Unmarshal(b, fromBinary); err != nil || !proto.Equal(m, fromBinary) {
		t.Fatalf("%s: the request means another thing in binary: %v", name, err)
	}
}

// dropUnknown clears the unknown fields of m and of every message in it.
func dropUnknown(m protoreflect.Message) {
	m.SetUnknown(nil)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					dropUnknown(mv.Message())
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				for i := range v.List().Len() {
					dropUnknown(v.List().Get(i).Message())
				}
			}
		case fd.Message() != nil:
			dropUnknown(v.Message())
		}
		return true
	})
}

// populate sets every field of m (the first of each oneof), two elements in each list, one entry
// in each map, nested messages three levels deep.
func populate(m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() && m.WhichOneof(od) != nil {
			continue
		}
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			v := mp.NewValue()
			if fd.MapValue().Message() != nil {
				populate(v.Message(), depth+1)
			} else {
				v = sample(fd.MapValue())
			}
			mp.Set(sample(fd.MapKey()).MapKey(), v)
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range 2 {
				if fd.Message() != nil {
					e := l.NewElement()
					populate(e.Message(), depth+1)
					l.Append(e)
				} else {
					l.Append(sample(fd))
				}
			}
		case fd.Message() != nil:
			if depth < 3 {
				populate(m.Mutable(fd).Message(), depth+1)
			}
		default:
			m.Set(fd, sample(fd))
		}
	}
}

// sample is a non-zero value of a scalar field.
func sample(fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		return protoreflect.ValueOfEnum(vals.Get(vals.Len() - 1).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(42)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(1_772_000_000)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(42)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(1_772_000_000)
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(1.5)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(1.5)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString("did:schakel:" + string(fd.Name()))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte(fd.FullName()))
	}
	panic("sample: unknown kind " + fd.Kind().String())
}
