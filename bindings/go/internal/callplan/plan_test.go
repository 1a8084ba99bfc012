package callplan

import "testing"

func TestSelfTest(t *testing.T) {
	if err := check(); err != nil {
		t.Fatal(err)
	}
}
