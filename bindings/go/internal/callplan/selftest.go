package callplan

import (
	"fmt"
	"math"
	"runtime"
	"unsafe"
)

// probe is a func called through its plan with words laid out as C would, and what it must return.
type probe struct {
	name string
	fn   interface{}
	w    Words
	want Ret
}

// check calls probe funcs through their plans with registers laid out as a C caller would (with garbage
// in the bits a C caller leaves undefined) and compares what they saw and returned with the expected
// values. It fails when Go passes arguments in a way the plans don't model.
func check() error {
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		return fmt.Errorf("cbslot calls Go funcs from C through Go's register ABI on amd64 and arm64 only (this is %s)", runtime.GOARCH)
	}
	seven := uint64(7)
	probes := []probe{{
		name: "scalars",
		fn: func(a int8, x float32, b uint16, y float64, c int32, d bool, p *uint64) int64 {
			if a == -3 && x == 1.5 && b == 65000 && y == -2.25 && c == -100000 && d && *p == 7 {
				return -1234567890123
			}
			return 1
		},
		w: Words{0xffffffffffff77fd, 0x123400000000fde8, 0xdeadbeeffffe7960, 0xab01, uint64(ptr(&seven)),
			0xdeadbeef<<32 | uint64(math.Float32bits(1.5)), math.Float64bits(-2.25)},
		want: Ret{Int: [2]uint64{^uint64(1234567890123 - 1)}},
	}, {
		name: "float32 result",
		fn:   func(x float32, n int64) float32 { return x * float32(n) },
		w:    Words{3, 0, 0, 0, 0, 0xffffffff<<32 | uint64(math.Float32bits(0.5))},
		want: Ret{Float: [2]uint64{uint64(math.Float32bits(1.5))}},
	}}
	if runtime.GOARCH == "amd64" {
		type pt struct{ X, Y int32 }
		probes = append(probes, probe{
			name: "every register", // 5 C integer words as 9 Go integer registers, 8 floating-point ones
			fn: func(a, b, c, d pt, e int64, f0, f1, f2, f3, f4, f5, f6, f7 float64) int64 {
				if a == (pt{1, -2}) && b == (pt{3, -4}) && c == (pt{5, -6}) && d == (pt{7, -8}) && e == -9 &&
					f0 == 0.5 && f1 == 1.5 && f2 == 2.5 && f3 == 3.5 && f4 == 4.5 && f5 == 5.5 && f6 == 6.5 && f7 == 7.5 {
					return 77
				}
				return 1
			},
			w: Words{0xfffffffe_00000001, 0xfffffffc_00000003, 0xfffffffa_00000005, 0xfffffff8_00000007, ^uint64(8),
				math.Float64bits(0.5), math.Float64bits(1.5), math.Float64bits(2.5), math.Float64bits(3.5),
				math.Float64bits(4.5), math.Float64bits(5.5), math.Float64bits(6.5), math.Float64bits(7.5)},
			want: Ret{Int: [2]uint64{77}},
		})
		type s1 struct {
			A int32
			B float32
		}
		type s2 struct{ X, Y float64 }
		type s3 struct {
			P uint8
			Q int16
			R int32
		}
		type r1 struct {
			A, B, C, D int16
			E, F       float32
		}
		probes = append(probes, probe{
			name: "structs",
			fn: func(s s1, t s2, u s3) r1 {
				if s == (s1{-5, 2.5}) && t == (s2{1e300, -0.125}) && u == (s3{200, -2, -70000}) {
					return r1{-1, 2, -3, 4, 0.5, -8}
				}
				return r1{}
			},
			w: Words{uint64(math.Float32bits(2.5))<<32 | uint64(uint32(0xfffffffb)), 0xfffeee90_fffe_00c8, 0, 0, 0,
				math.Float64bits(1e300), math.Float64bits(-0.125)},
			want: Ret{Int: [2]uint64{0x0004_fffd_0002_ffff}, Float: [2]uint64{uint64(math.Float32bits(-8))<<32 | uint64(math.Float32bits(0.5))}},
		})
	}
	for _, pr := range probes {
		p, err := compile(pr.fn)
		if err != nil {
			return fmt.Errorf("callplan self-test %s: %w", pr.name, err)
		}
		w := pr.w
		if got := p.Call(&w); got != pr.want {
			return fmt.Errorf("this Go (%s/%s) passes arguments differently from what cbslot's call plans expect "+
				"(self-test %q: got %x, want %x); please report it", runtime.Version(), runtime.GOARCH, pr.name, got, pr.want)
		}
	}
	return nil
}

func ptr(p *uint64) uintptr { return uintptr(unsafe.Pointer(p)) }
