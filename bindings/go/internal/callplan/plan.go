// Package callplan turns a Go func into a plan for calling it with the argument registers of a C call,
// without reflection on the call path and without allocating.
//
// cbslot's Go dispatchers receive a C call's argument registers as raw words: up to 5 integer registers
// (after userdata) and 8 floating-point registers. Compile works out once, per func type, where each
// argument of the Go func lives among those words under the platform's C calling convention (System V
// AMD64, or AAPCS64 for scalars), and which register of Go's own register-based calling convention
// (ABIInternal) it must be in. Call then moves the words into place and calls the func through a single
// canonical func type with 9 integer and 15 floating-point parameters: under ABIInternal every func whose
// arguments and results all travel in registers receives them exactly as that canonical func would, so
// the call reaches the real func with its real arguments. Results travel back the same way.
//
// That rests on Go's internal ABI, which Go does not promise to keep. So the first Compile runs a
// self-test that calls probe funcs of every kind of shape through the canonical type and compares with
// direct calls; if any differs, Compile refuses every func with an error saying so, rather than call
// one wrongly.
package callplan

import (
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"runtime"
	"runtime/debug"
	"sync"
	"unsafe"
)

// The C side: registers a dispatcher receives.
const (
	CInts   = 5 // integer argument registers after userdata
	CFloats = 8 // floating-point argument registers
)

// Go's ABIInternal register counts on amd64 (arm64 has more; the canonical type uses the smaller).
const (
	goInts    = 9
	goFloats  = 15
	goResInts = 4 // results the canonical type reads back
	goResFlts = 4
)

// canon is the one func type every planned func is called through.
type canon func(i0, i1, i2, i3, i4, i5, i6, i7, i8 uintptr,
	f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14 float64) (r0, r1, r2, r3 uintptr, g0, g1, g2, g3 float64)

// Result says which registers the C caller reads the result from; a dispatcher is chosen by it.
type Result uint8

// The result kinds, named after the C registers they fill (System V names; AAPCS64: x0/x1, d0/d1).
const (
	ResultInt      Result = iota // nothing, or rax (+ rdx): an integer, a pointer, a struct of integer eightbytes
	ResultFloat                  // xmm0 (+ xmm1): a float, a double, a struct of SSE eightbytes
	ResultIntFloat               // rax, xmm0: a 16-byte struct whose first eightbyte is INTEGER, second SSE
	ResultFloatInt               // xmm0, rax: first SSE, second INTEGER
	resultKinds
)

// move copies one value from a source word to a destination register.
type move struct {
	src    uint8 // index into the source words: integers first, then floats (CInts + k)
	dst    uint8 // destination register index within its bank
	float  bool  // destination is a floating-point register
	shift  uint8 // bit offset of the value within the source word
	size   uint8 // bytes
	signed bool  // sign-extend (integers)
}

// Plan calls one func with the registers of a C call.
type Plan struct {
	fn         canon
	args       []move // to Go registers: dst indexes Go's int or float argument registers
	res        []move // from Go result registers (src: int results, then goResInts + float results) to C words
	Result     Result
	ResultRegs int // C result registers the func fills: 0 (no result), 1 or 2 (a struct over 8 bytes)
	Ints       int // C integer argument registers the func reads (for choosing a dispatcher)
	Floats     int // C floating-point argument registers the func reads
}

// Words are a C call's registers as the dispatcher received them: integer argument registers, then the
// raw 64 bits of each floating-point one.
type Words [CInts + CFloats]uint64

// Ret is what goes back to C: the integer result registers (rax, rdx) and the floating-point ones'
// raw bits (xmm0, xmm1).
type Ret struct {
	Int   [2]uint64
	Float [2]uint64
}

// Call calls the func with the C call's registers and returns the C result registers.
//
// A panic must not leave the func: Go would unwind past the C frames between here and the code that
// recovers, and cbslot would count the call as running for ever (its unregister never completes, waits
// for it block). So a panic that reaches Call ends the process with its value and stack, as an
// unrecovered panic does.
func (p *Plan) Call(w *Words) (r Ret) {
	defer func() {
		if v := recover(); v != nil {
			fmt.Fprintf(os.Stderr, "cbslot: panic in a Go func called from C (a panic cannot unwind through "+
				"C frames; recover inside the func): %v\n\n%s", v, debug.Stack())
			os.Exit(2)
		}
	}()
	var gi [goInts]uintptr
	var gf [goFloats]uint64
	for i := range p.args {
		m := &p.args[i]
		v := extract(w[m.src], m.shift, m.size, m.signed)
		if m.float {
			gf[m.dst] = v
		} else {
			gi[m.dst] = uintptr(v)
		}
	}
	r0, r1, r2, r3, g0, g1, g2, g3 := p.fn(gi[0], gi[1], gi[2], gi[3], gi[4], gi[5], gi[6], gi[7], gi[8],
		f64(gf[0]), f64(gf[1]), f64(gf[2]), f64(gf[3]), f64(gf[4]), f64(gf[5]), f64(gf[6]), f64(gf[7]),
		f64(gf[8]), f64(gf[9]), f64(gf[10]), f64(gf[11]), f64(gf[12]), f64(gf[13]), f64(gf[14]))
	if len(p.res) == 0 {
		return r
	}
	out := [goResInts + goResFlts]uint64{uint64(r0), uint64(r1), uint64(r2), uint64(r3),
		math.Float64bits(g0), math.Float64bits(g1), math.Float64bits(g2), math.Float64bits(g3)}
	for i := range p.res {
		m := &p.res[i]
		v := extract(out[m.src], 0, m.size, m.signed) << m.shift
		if m.float {
			r.Float[m.dst] |= v
		} else {
			r.Int[m.dst] |= v
		}
	}
	return r
}

func f64(bits uint64) float64 { return math.Float64frombits(bits) }

// extract takes size bytes at bit shift of word, zero- or sign-extended to 64 bits.
func extract(word uint64, shift, size uint8, signed bool) uint64 {
	v := word >> shift
	if size >= 8 {
		return v
	}
	bits := 8 * uint(size)
	if signed {
		return uint64(int64(v<<(64-bits)) >> (64 - bits))
	}
	return v & (1<<bits - 1)
}

// ErrShape is wrapped by every error Compile returns for a func it cannot call.
var ErrShape = errors.New("unsupported func shape")

func shapeErr(format string, args ...interface{}) error {
	return fmt.Errorf("%w: "+format, append([]interface{}{ErrShape}, args...)...)
}

var (
	cache    sync.Map // reflect.Type -> *Plan (without fn) or error
	selfTest sync.Once
	selfErr  error
)

// Compile makes a plan for fn, a func value. The work per func type is done once; later funcs of the
// same type cost a cache lookup.
func Compile(fn interface{}) (*Plan, error) {
	selfTest.Do(func() { selfErr = check() })
	if selfErr != nil {
		return nil, selfErr
	}
	return compile(fn)
}

func compile(fn interface{}) (*Plan, error) {
	t := reflect.TypeOf(fn)
	if t == nil || t.Kind() != reflect.Func {
		return nil, shapeErr("%T is not a func", fn)
	}
	if reflect.ValueOf(fn).IsNil() {
		return nil, shapeErr("the func is nil")
	}
	var shape *Plan
	if v, ok := cache.Load(t); ok {
		if err, bad := v.(error); bad {
			return nil, err
		}
		shape = v.(*Plan)
	} else {
		p, err := layout(t)
		if err != nil {
			cache.Store(t, err)
			return nil, err
		}
		cache.Store(t, p)
		shape = p
	}
	p := *shape
	// A func value stored in an interface is the interface's data word itself (func types are
	// pointer-shaped), so this reads the func value out of fn and gives it the canonical type.
	p.fn = *(*canon)(unsafe.Pointer(&(*[2]unsafe.Pointer)(unsafe.Pointer(&fn))[1]))
	return &p, nil
}

// scalar is one register-sized leaf of an argument or result: its offset in the value and its kind.
type scalar struct {
	off    uintptr
	size   uintptr
	float  bool
	signed bool
}

// leaves flattens t into its scalar fields in memory order, or says why it can't.
func leaves(t reflect.Type, base uintptr, out []scalar) ([]scalar, error) {
	switch t.Kind() {
	case reflect.Bool, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Uintptr, reflect.UnsafePointer, reflect.Ptr:
		return append(out, scalar{off: base, size: t.Size()}), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return append(out, scalar{off: base, size: t.Size(), signed: true}), nil
	case reflect.Float32, reflect.Float64:
		return append(out, scalar{off: base, size: t.Size(), float: true}), nil
	case reflect.Struct:
		if t.Size() == 0 {
			return nil, shapeErr("%s has size 0 (C has no such argument)", t)
		}
		var err error
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.Type.Size() == 0 {
				return nil, shapeErr("%s has a zero-size field %s (its C layout would differ)", t, f.Name)
			}
			if out, err = leaves(f.Type, base+f.Offset, out); err != nil {
				return nil, err
			}
		}
		return out, nil
	case reflect.Array:
		if t.Len() == 1 {
			return leaves(t.Elem(), base, out)
		}
		return nil, shapeErr("%s: Go passes arrays of more than one element in memory, not registers; use a struct of fields", t)
	}
	return nil, shapeErr("%s is not a C type (integers, bool, floats, pointers and small structs of them)", t)
}

// eightbytes classifies a struct's leaves the System V way: a 64-bit chunk is INTEGER if any
// integer-class leaf overlaps it, else SSE.
func eightbytes(ls []scalar, size uintptr) (float [2]bool, n int) {
	n = int((size + 7) / 8)
	float = [2]bool{true, true}
	for _, l := range ls {
		if !l.float {
			float[l.off/8] = false
		}
	}
	return float, n
}

// layout works out the moves for a func type.
func layout(t reflect.Type) (*Plan, error) {
	if t.IsVariadic() {
		return nil, shapeErr("variadic funcs cannot be called from C")
	}
	p := &Plan{}
	goI, goF := 0, 0
	for a := 0; a < t.NumIn(); a++ {
		in := t.In(a)
		ls, err := leaves(in, 0, nil)
		if err != nil {
			return nil, fmt.Errorf("argument %d: %w", a, err)
		}
		// where the C caller put it: one word per eightbyte (a scalar is one eightbyte)
		var words [2]uint8
		if in.Kind() == reflect.Struct || in.Kind() == reflect.Array {
			if runtime.GOARCH != "amd64" {
				return nil, shapeErr("argument %d: structs by value are supported on amd64 only (this is %s)", a, runtime.GOARCH)
			}
			if in.Size() > 16 {
				return nil, shapeErr("argument %d: %s is %d bytes; C passes structs over 16 bytes in memory (System V): pass a pointer", a, in, in.Size())
			}
			cls, n := eightbytes(ls, in.Size())
			ni, nf := 0, 0
			for e := 0; e < n; e++ {
				if cls[e] {
					nf++
				} else {
					ni++
				}
			}
			if p.Ints+ni > CInts || p.Floats+nf > CFloats {
				return nil, shapeErr("argument %d: %s does not fit in the remaining argument registers (C would pass it in memory)", a, in)
			}
			for e := 0; e < n; e++ {
				if cls[e] {
					words[e] = uint8(CInts + p.Floats)
					p.Floats++
				} else {
					words[e] = uint8(p.Ints)
					p.Ints++
				}
			}
		} else if ls[0].float {
			if p.Floats == CFloats {
				return nil, shapeErr("argument %d: more than %d floating-point arguments", a, CFloats)
			}
			words[0] = uint8(CInts + p.Floats)
			p.Floats++
		} else {
			if p.Ints == CInts {
				return nil, shapeErr("argument %d: more than %d integer or pointer arguments", a, CInts)
			}
			words[0] = uint8(p.Ints)
			p.Ints++
		}
		// where Go wants it: each leaf in the next register of its kind, or the whole argument in memory
		fi, ff := 0, 0
		for _, l := range ls {
			if l.float {
				ff++
			} else {
				fi++
			}
		}
		if goI+fi > goInts || goF+ff > goFloats {
			return nil, shapeErr("argument %d: Go would pass %s in memory (more than %d integer or %d floating-point registers in all)", a, in, goInts, goFloats)
		}
		for _, l := range ls {
			m := move{src: words[l.off/8], shift: uint8(8 * (l.off % 8)), size: uint8(l.size), signed: l.signed, float: l.float}
			if l.float {
				m.dst = uint8(goF)
				goF++
			} else {
				m.dst = uint8(goI)
				goI++
			}
			p.args = append(p.args, m)
		}
	}
	switch t.NumOut() {
	case 0:
		return p, nil
	case 1:
	default:
		return nil, shapeErr("C functions return at most one value; this func returns %d", t.NumOut())
	}
	out := t.Out(0)
	ls, err := leaves(out, 0, nil)
	if err != nil {
		return nil, fmt.Errorf("result: %w", err)
	}
	cls := [2]bool{ls[0].float, false}
	n := 1
	aggregate := out.Kind() == reflect.Struct || out.Kind() == reflect.Array
	if aggregate {
		if runtime.GOARCH != "amd64" {
			return nil, shapeErr("result: structs by value are supported on amd64 only (this is %s)", runtime.GOARCH)
		}
		if out.Size() > 16 {
			return nil, shapeErr("result: %s is %d bytes; C returns structs over 16 bytes in memory (System V): return through a pointer argument", out, out.Size())
		}
		cls, n = eightbytes(ls, out.Size())
	}
	p.ResultRegs = n
	// the C result register of each eightbyte: integers fill rax then rdx, SSE xmm0 then xmm1
	var dst [2]uint8
	ni, nf := 0, 0
	for e := 0; e < n; e++ {
		if cls[e] {
			dst[e] = uint8(nf)
			nf++
		} else {
			dst[e] = uint8(ni)
			ni++
		}
	}
	switch {
	case n == 2 && !cls[0] && cls[1]:
		p.Result = ResultIntFloat
	case n == 2 && cls[0] && !cls[1]:
		p.Result = ResultFloatInt
	case cls[0]:
		p.Result = ResultFloat
	default:
		p.Result = ResultInt
	}
	ri, rf := 0, 0
	for _, l := range ls {
		e := l.off / 8
		m := move{dst: dst[e], float: cls[e], shift: uint8(8 * (l.off % 8)), size: uint8(l.size), signed: l.signed && !aggregate} // fields share a word: no extension into a neighbour
		if l.float {
			m.src = uint8(goResInts + rf)
			rf++
		} else {
			m.src = uint8(ri)
			ri++
		}
		p.res = append(p.res, m)
	}
	if ri > goResInts || rf > goResFlts {
		return nil, shapeErr("result: %s has more than %d integer or %d floating-point fields", out, goResInts, goResFlts)
	}
	return p, nil
}
