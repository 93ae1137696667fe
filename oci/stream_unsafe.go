package oci

import (
	"strings"
	"unsafe"
)

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

func containsString(s, sub string) bool { return strings.Contains(s, sub) }
