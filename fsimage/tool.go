package fsimage

import (
	"context"

	"github.com/sysext/sysext/internal/tool"
)

func lookTool(name string) (string, error) { return tool.Look(name) }

func runTool(ctx context.Context, name string, args ...string) ([]byte, error) {
	return tool.Run(ctx, name, args...)
}

func runToolLimit(ctx context.Context, limit int64, name string, args ...string) ([]byte, error) {
	return tool.RunLimit(ctx, limit, name, args...)
}
