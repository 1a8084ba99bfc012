package benchpurego

import (
	"testing"

	"github.com/ebitengine/purego"
)

// purego.NewCallback has 2000 slots that are never freed: this benchmark can only make 2000 of them, so
// it measures creating up to that many (b.N is capped) and can never free one.
func BenchmarkPuregoNewCallback(b *testing.B) {
	n := b.N
	if n > 1900 {
		n = 1900
	}
	b.ResetTimer()
	for i := 0; i < n; i++ {
		purego.NewCallback(func(x uintptr) uintptr { return x })
	}
	b.StopTimer()
	if n < b.N { // report per created callback, not per b.N
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/callback")
	}
}
