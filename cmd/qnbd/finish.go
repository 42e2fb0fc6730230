// The checks that need the whole command line, in qemu-nbd's order: list mode, the operand
// count, the exports and their names, then TLS.
package main

// msgAioNative is QEMU's refusal of aio=native without O_DIRECT.
const msgAioNative = "aio=native was specified, but it requires cache.direct=on, which was not specified"

// finish checks the whole command line once every option is applied and completes cfg.
func (c *cmdline) finish(operands []string) (*config, error) {
	cfg := c.cfg
	if cfg.help || cfg.version {
		return cfg, nil
	}
	if cfg.metricsWeb != "" && cfg.metricsAddr == "" {
		return nil, usagef("--metrics-web-config needs --metrics-addr")
	}
	if cfg.list {
		return cfg, c.finishList(len(operands))
	}
	if err := c.buildExports(operands); err != nil {
		return nil, err
	}
	if cfg.aio == "native" && cfg.cache != cacheNone && cfg.cache != cacheDirectsync && !c.imageOpts {
		// Not a usage error in qemu-nbd either: its block layer refuses the open. With
		// --image-opts, cache.direct= may still turn O_DIRECT on (imageopen.go).
		return nil, blkOpenError(cfg.exports[0].file, "%s.", msgAioNative)
	}
	if err := checkExports(cfg.exports); err != nil {
		return nil, err
	}
	if err := cfg.tls.check(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// finishList applies qemu-nbd's checks of -L and takes its client credentials.
func (c *cmdline) finishList(operands int) error {
	cfg, top := c.cfg, c.top
	perDevice := c.exportName != nil || top.description != "" || top.offset != 0 || top.format != "" ||
		top.loadSnapshot != "" || cfg.allocDepth || c.seen["aio"] || c.seen["discard"] || c.seen["cache"] ||
		len(c.extra) > 0 || top.forceShare
	if err := listChecks(cfg, operands, perDevice); err != nil {
		return err
	}
	spec, err := cfg.tls.checkList()
	cfg.listTLS = spec
	return err
}

// buildExports makes the FILE operand's export and the --export ones.
func (c *cmdline) buildExports(operands []string) error {
	cfg, top := c.cfg, c.top
	switch {
	case len(operands) > 1, len(operands) == 0 && len(c.extra) == 0:
		return &usageError{msg: "Invalid number of arguments", hint: hintArgs}
	case len(operands) == 1:
		top.file, top.imageOpts = operands[0], c.imageOpts
		if c.exportName != nil {
			top.name = *c.exportName
		}
		cfg.exports = append(cfg.exports, top)
	case c.exportName != nil || top.description != "" || top.snapshot || top.loadSnapshot != "":
		return usagef("-x, -D, -s and -l apply to the FILE operand, which is missing")
	}
	for _, e := range c.extra {
		// -r and -f are defaults for --export images; their own options override them.
		if e.format == "" {
			e.format = top.format
		}
		if !e.roSet {
			e.readOnly = top.readOnly
		}
		e.forceShare = top.forceShare
		cfg.exports = append(cfg.exports, e.exportConfig)
	}
	return nil
}

// checkExports refuses force-share on a writable export and two exports of one name.
func checkExports(exports []exportConfig) error {
	names := map[string]bool{}
	for _, e := range exports {
		// QEMU refuses force-share on a writable image; with -s the image is only read.
		if e.forceShare && !e.readOnly && e.loadSnapshot == "" && !e.snapshot {
			return usagef("'%s': %s", e.file, msgForceShareWritable)
		}
	}
	for _, e := range exports {
		if names[e.name] {
			return usagef("two exports named '%s'", e.name)
		}
		names[e.name] = true
	}
	return nil
}
