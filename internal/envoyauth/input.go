package envoyauth

import (
	"encoding/base64"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// The input document is the one opa-envoy-plugin builds from a CheckRequest (contract section 6), so that a
// stock opa-envoy-plugin serving keygate's bundle answers as keygate authz does:
//
//   - attributes: the CheckRequest's attributes with protobuf JSON field names (contextExtensions,
//     metadataContext.filterMetadata, request.http.headerMap, ...) and opa-envoy-plugin's value mapping:
//     messages recursively (a Timestamp is {"seconds", "nanos"}), Struct as a plain object, 64-bit integers and
//     enums as numbers, bytes as base64 strings;
//   - parsed_path, parsed_query, parsed_body (null: keygate parses no bodies), truncated_body (false), version
//     ({"ext_authz": "v3", "encoding": "protojson"}), source_principal (when the peer has one);
//   - identity ({"user", "token"}), keygate's own addition, when keygate verified the bearer JWT itself.
//
// Two differences, on purpose: header names are lowercase (HTTP/2 and Envoy send them so; a client's
// "X-Current-Orgid" means the same header), and the Authorization header and client-sent x-keygate-* headers
// are left out (keygate verified the former and puts its result in identity, which also keeps bearer tokens out
// of decision logs; the latter are never trusted).

var versionTerm = ast.ObjectTerm(
	ast.Item(ast.InternedTerm("encoding"), ast.InternedTerm("protojson")),
	ast.Item(ast.InternedTerm("ext_authz"), ast.InternedTerm("v3")),
)

// Input returns the Rego input document (see above). Built once; WithIdentity rebuilds it.
func (r *Request) Input() ast.Value {
	if r.input != nil {
		return r.input
	}
	obj := ast.NewObjectWithCapacity(8)
	obj.Insert(ast.InternedTerm("attributes"), messageTerm(r.req.GetAttributes().ProtoReflect()))
	obj.Insert(ast.InternedTerm("version"), versionTerm)
	if p := r.req.GetAttributes().GetSource().GetPrincipal(); p != "" {
		obj.Insert(ast.InternedTerm("source_principal"), ast.StringTerm(p))
	}
	if r.Segments != nil {
		segTerms := make([]*ast.Term, len(r.Segments))
		for i, s := range r.Segments {
			segTerms[i] = ast.StringTerm(s)
		}
		obj.Insert(ast.InternedTerm("parsed_path"), ast.ArrayTerm(segTerms...))
		qTerms := make([][2]*ast.Term, 0, len(r.query))
		for k, vs := range r.query {
			vt := make([]*ast.Term, len(vs))
			for i, v := range vs {
				vt[i] = ast.StringTerm(v)
			}
			qTerms = append(qTerms, ast.Item(ast.StringTerm(k), ast.ArrayTerm(vt...)))
		}
		obj.Insert(ast.InternedTerm("parsed_query"), ast.ObjectTerm(qTerms...))
	}
	obj.Insert(ast.InternedTerm("parsed_body"), ast.NullTerm())
	obj.Insert(ast.InternedTerm("truncated_body"), ast.InternedTerm(false))
	if id := r.identity; id != nil {
		items := make([][2]*ast.Term, 0, 2)
		items = append(items, ast.Item(ast.InternedTerm("user"), ast.StringTerm(id.User)))
		if id.Token != "" {
			items = append(items, ast.Item(ast.InternedTerm("token"), ast.StringTerm(id.Token)))
		}
		obj.Insert(ast.InternedTerm("identity"), ast.ObjectTerm(items...))
	}
	r.input = obj
	return obj
}

const httpRequestName = "envoy.service.auth.v3.AttributeContext.HttpRequest"

// messageTerm maps a message as opa-envoy-plugin does: set fields only, under their JSON names.
func messageTerm(m protoreflect.Message) *ast.Term {
	if !m.IsValid() {
		return ast.ObjectTerm()
	}
	if s, ok := m.Interface().(*structpb.Struct); ok {
		return structTerm(s)
	}
	isHTTP := m.Descriptor().FullName() == httpRequestName
	items := make([][2]*ast.Term, 0, m.Descriptor().Fields().Len())
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		var t *ast.Term
		switch {
		case isHTTP && fd.Name() == "headers":
			t = headersTerm(v.Map())
		case isHTTP && fd.Name() == "header_map":
			t = headerMapTerm(v.Message())
		case fd.IsMap():
			entries := make([][2]*ast.Term, 0, v.Map().Len())
			v.Map().Range(func(k protoreflect.MapKey, e protoreflect.Value) bool {
				entries = append(entries, ast.Item(ast.StringTerm(k.String()), scalarOrMessage(fd.MapValue(), e)))
				return true
			})
			t = ast.ObjectTerm(entries...)
		case fd.IsList():
			l := v.List()
			elems := make([]*ast.Term, l.Len())
			for i := range elems {
				elems[i] = scalarOrMessage(fd, l.Get(i))
			}
			t = ast.ArrayTerm(elems...)
		default:
			t = scalarOrMessage(fd, v)
		}
		items = append(items, ast.Item(ast.StringTerm(fd.JSONName()), t))
		return true
	})
	return ast.ObjectTerm(items...)
}

func scalarOrMessage(fd protoreflect.FieldDescriptor, v protoreflect.Value) *ast.Term {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return messageTerm(v.Message())
	case protoreflect.BoolKind:
		return ast.InternedTerm(v.Bool())
	case protoreflect.StringKind:
		return ast.StringTerm(v.String())
	case protoreflect.BytesKind:
		return ast.StringTerm(base64.StdEncoding.EncodeToString(v.Bytes()))
	case protoreflect.EnumKind:
		return ast.IntNumberTerm(int(v.Enum()))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
		protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return ast.NewTerm(ast.Number(v.String()))
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return ast.FloatNumberTerm(v.Float())
	default:
		return ast.NullTerm()
	}
}

// headersTerm is request.http.headers with lowercase names, without Authorization and x-keygate-* headers.
func headersTerm(m protoreflect.Map) *ast.Term {
	items := make([][2]*ast.Term, 0, m.Len())
	m.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		if name := lower(k.String()); keepHeader(name) {
			items = append(items, ast.Item(ast.StringTerm(name), ast.StringTerm(v.String())))
		}
		return true
	})
	return ast.ObjectTerm(items...)
}

// headerMapTerm is request.http.headerMap ({"headers": [{"key", "value" | "rawValue"}]}) with the same
// filter and lowercase names.
func headerMapTerm(m protoreflect.Message) *ast.Term {
	list := m.Get(m.Descriptor().Fields().ByName("headers")).List()
	elems := make([]*ast.Term, 0, list.Len())
	for i := 0; i < list.Len(); i++ {
		hv := list.Get(i).Message()
		obj := messageTerm(hv).Value.(ast.Object)
		key, _ := obj.Get(ast.InternedTerm("key")).Value.(ast.String)
		name := lower(string(key))
		if !keepHeader(name) {
			continue
		}
		obj.Insert(ast.InternedTerm("key"), ast.StringTerm(name))
		elems = append(elems, ast.NewTerm(obj))
	}
	return ast.ObjectTerm(ast.Item(ast.InternedTerm("headers"), ast.ArrayTerm(elems...)))
}

func keepHeader(name string) bool {
	return name != "authorization" && !strings.HasPrefix(name, HeaderPrefix)
}

func structTerm(s *structpb.Struct) *ast.Term {
	items := make([][2]*ast.Term, 0, len(s.GetFields()))
	for k, v := range s.GetFields() {
		items = append(items, ast.Item(ast.StringTerm(k), valueTerm(v)))
	}
	return ast.ObjectTerm(items...)
}

func valueTerm(v *structpb.Value) *ast.Term {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return ast.StringTerm(k.StringValue)
	case *structpb.Value_NumberValue:
		return ast.FloatNumberTerm(k.NumberValue)
	case *structpb.Value_BoolValue:
		return ast.BooleanTerm(k.BoolValue)
	case *structpb.Value_StructValue:
		return structTerm(k.StructValue)
	case *structpb.Value_ListValue:
		vals := k.ListValue.GetValues()
		ts := make([]*ast.Term, len(vals))
		for i, e := range vals {
			ts[i] = valueTerm(e)
		}
		return ast.ArrayTerm(ts...)
	default:
		return ast.NullTerm()
	}
}
