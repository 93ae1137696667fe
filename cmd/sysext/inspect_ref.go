package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci"
)

// refJSON is `inspect REF --json`.
type refJSON struct {
	Reference   string            `json:"reference"`
	Digest      string            `json:"digest"`
	MediaType   string            `json:"media_type"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
	Platforms   []platformJSON    `json:"platforms"`
	Attached    attachedJSON      `json:"attached"`
	Skipped     []string          `json:"skipped,omitempty"`
}

// attachedJSON lists signatures and other artifacts attached to a manifest.
type attachedJSON struct {
	Referrers  []referrerJSON `json:"referrers"`
	CosignTags []string       `json:"cosign_tags"`
}

type referrerJSON struct {
	Digest       string `json:"digest"`
	ArtifactType string `json:"artifact_type,omitempty"`
}

func newAttachedJSON(a *oci.Attached) attachedJSON {
	j := attachedJSON{Referrers: []referrerJSON{}, CosignTags: []string{}}
	for _, r := range a.Referrers {
		j.Referrers = append(j.Referrers, referrerJSON{r.Digest.String(), r.ArtifactType})
	}
	for tag := range a.Tags {
		j.CosignTags = append(j.CosignTags, tag)
	}
	sort.Strings(j.CosignTags)
	return j
}

func (a attachedJSON) String() string {
	if len(a.Referrers) == 0 && len(a.CosignTags) == 0 {
		return "none"
	}
	var parts []string
	for _, r := range a.Referrers {
		t := r.ArtifactType
		if t == "" {
			t = "unknown type"
		}
		parts = append(parts, "referrer "+t)
	}
	parts = append(parts, a.CosignTags...)
	return strings.Join(parts, ", ")
}

type platformJSON struct {
	Platform    string            `json:"platform"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Kind        string            `json:"kind"`
	Layer       layerJSON         `json:"layer"`
	FileName    string            `json:"file_name"`
	Annotations map[string]string `json:"annotations"`
	Extension   *imageJSON        `json:"extension,omitempty"`
	Compatible  *compatJSON       `json:"compatible"`
	Attached    attachedJSON      `json:"attached"`
}

type layerJSON struct {
	MediaType string `json:"media_type"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	Title     string `json:"title,omitempty"`
}

// runInspectRef describes a registry or layout reference from its
// manifests alone: no image is downloaded.
func runInspectRef(c *cobra.Command, opts inspectOptions, arg string) error {
	ctx := c.Context()
	if _, err := oci.ParseReference(arg); err != nil {
		return usageError("%s: no such file, and not a reference: %v", arg, err)
	}
	hostFile, hostRel, err := readOSRelease(opts.OSRelease)
	if err != nil {
		return err
	}
	ref, t, err := openReference(ctx, arg, registryFlags{PlainHTTP: opts.PlainHTTP}, false)
	if err != nil {
		return err
	}
	a, err := oci.Describe(ctx, t, ref)
	if err != nil {
		return err
	}
	j := refJSON{Reference: ref.String(), Digest: a.Root.Digest.String(), MediaType: a.Root.MediaType, Size: a.Root.Size, Annotations: map[string]string{}, Skipped: a.Skipped}
	if a.Index != nil && a.Index.Annotations != nil {
		j.Annotations = a.Index.Annotations
	}
	att, err := oci.ListAttached(ctx, t, a.Root)
	if err != nil {
		return oci.Explain(ref, fmt.Errorf("%s: %w", ref, err))
	}
	j.Attached = newAttachedJSON(att)
	for _, e := range a.Entries {
		p := platformJSON{
			Platform: oci.PlatformString(e.Platform),
			Digest:   e.Descriptor.Digest.String(),
			Size:     e.Descriptor.Size,
			Kind:     string(e.Kind),
			Layer: layerJSON{
				MediaType: e.Layer.MediaType, Digest: e.Layer.Digest.String(), Size: e.Layer.Size,
				Title: e.Layer.Annotations[oci.AnnotationTitle],
			},
			FileName:    e.FileName,
			Annotations: e.Manifest.Annotations,
		}
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		if a.Index == nil && e.Kind == oci.KindSysext {
			p.Platform = oci.PlatformString(oci.Platform(e.Metadata.Arch))
		}
		if e.Kind == oci.KindSysext {
			rel := e.Release()
			ij := newImageJSON("", e.Manifest.Annotations[oci.AnnotationFormat], e.Layer.Size, e.Layer.Digest.String(), e.Metadata, rel, nil)
			p.Extension = &ij
			if p.Compatible, err = compatibility(hostFile, hostRel, rel); err != nil {
				return err
			}
		} else {
			p.Compatible = &compatJSON{OSRelease: hostFile, Reason: "unknown before download: the manifest carries no extension-release fields"}
		}
		if a.Index != nil {
			att, err := oci.ListAttached(ctx, t, e.Descriptor)
			if err != nil {
				return oci.Explain(ref, fmt.Errorf("%s: %w", ref, err))
			}
			p.Attached = newAttachedJSON(att)
		} else {
			p.Attached = j.Attached
		}
		j.Platforms = append(j.Platforms, p)
	}
	sort.SliceStable(j.Platforms, func(x, y int) bool { return j.Platforms[x].Platform < j.Platforms[y].Platform })
	if opts.JSON {
		return printJSON(c.OutOrStdout(), j)
	}
	return printRef(c.OutOrStdout(), j)
}

func printRef(w io.Writer, j refJSON) error {
	kind := "manifest"
	if strings.Contains(j.MediaType, "index") || strings.Contains(j.MediaType, "list") {
		kind = "index"
	}
	printf(w, "%-15s %s\n", "reference:", j.Reference)
	printf(w, "%-15s %s (%s, %d platforms)\n", "digest:", j.Digest, kind, len(j.Platforms))
	for _, k := range []string{oci.AnnotationCreated, oci.AnnotationSource} {
		if v := j.Annotations[k]; v != "" {
			printf(w, "%-15s %s\n", strings.TrimPrefix(k, "org.opencontainers.image.")+":", v)
		}
	}
	if kind == "index" {
		printf(w, "%-15s %s\n", "attached:", j.Attached)
	}
	for _, p := range j.Platforms {
		printf(w, "\n%s  %s (%s)\n", p.Platform, p.Digest, p.Kind)
		printf(w, "  %-13s %s %s (%s)\n", "layer:", p.Layer.MediaType, p.Layer.Digest, humanSize(p.Layer.Size))
		printf(w, "  %-13s %s\n", "file:", p.FileName)
		if e := p.Extension; e != nil {
			dash := func(s string) string {
				if s == "" {
					return "-"
				}
				return s
			}
			printf(w, "  %-13s %s\n", "name:", e.Name)
			printf(w, "  %-13s %s\n", "version:", dash(e.Version))
			printf(w, "  %-13s %s\n", "architecture:", dash(e.Architecture))
			printf(w, "  %-13s %s\n", "ID:", e.ID)
			printf(w, "  %-13s %s\n", "SYSEXT_LEVEL:", dash(e.SysextLevel))
			printf(w, "  %-13s %s\n", "VERSION_ID:", dash(e.VersionID))
			for _, k := range []string{extension.FieldImageID, extension.FieldImageVersion} {
				if v := e.Release[k]; v != "" {
					printf(w, "  %-13s %s\n", k+":", v)
				}
			}
			printf(w, "  %-13s %s\n", "scope:", strings.Join(e.Scope, " "))
			for _, l := range verityRefLines(p.Annotations) {
				printf(w, "  %-13s %s\n", l[0]+":", l[1])
			}
		}
		printf(w, "  %-13s %s\n", "attached:", p.Attached)
		c := p.Compatible
		switch {
		case p.Extension == nil:
			printf(w, "  %-13s %s\n", "merges:", c.Reason)
		case c.OK:
			printf(w, "  %-13s yes, on the host described by %s\n", "merges:", c.OSRelease)
		default:
			printf(w, "  %-13s no, on the host described by %s: %s\n", "merges:", c.OSRelease, c.Reason)
		}
	}
	for _, s := range j.Skipped {
		printf(w, "\nskipped: %s\n", s)
	}
	return nil
}
