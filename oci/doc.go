// Package oci moves extension images through OCI registries and OCI image
// layouts: references, media types and annotations of the sysext artifact
// format, push, fetch, copy and auth. It is the only importer of oras-go's
// registry client.
package oci
