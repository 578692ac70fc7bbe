-- The names lsyncd 2.2 gives a configuration file, as recorders: `settings`,
-- `sync`, `default.rsync` / `default.rsyncssh` / `default.direct` with
-- lsyncd's defaults, and lsyncd's layer inheritance, so a configuration is
-- read as lsyncd reads it. Written for syncpipe (not lsyncd's code); the
-- key lists and default values are lsyncd's documented ones.
local records = { settings = { }, syncs = { }, notes = { } }
__syncpipe_records = records

lsyncd_version = '2.2.3'

local settingsKnown = {
	logfile = true, pidfile = true, nodaemon = true, statusFile = true,
	statusInterval = true, logfacility = true, logident = true, insist = true,
	inotifyMode = true, maxProcesses = true, maxDelays = true,
}

function settings( a1 )
	if type( a1 ) == 'string' then return records.settings[ a1 ] end
	if type( a1 ) ~= 'table' then error( 'settings{ ... } takes a table', 2 ) end
	for k, v in pairs( a1 ) do
		if type( k ) ~= 'number' then
			if not settingsKnown[ k ] then error( 'setting "'..k..'" unknown.', 2 ) end
			records.settings[ k ] = v
		else
			if not settingsKnown[ v ] then error( 'setting "'..tostring( v )..'" unknown.', 2 ) end
			records.settings[ v ] = true
		end
	end
end
local settingsSafe = settings

-- Functions that only make sense while lsyncd runs: recorded, never run.
local function runtimeOnly( name )
	return function( )
		records.notes[ #records.notes + 1 ] = name
	end
end
log = function( ) end
terminate = function( code ) error( 'the configuration called terminate('..tostring( code )..')', 2 ) end
now = function( ) return 0 end
readdir = function( ) return nil end
spawn = runtimeOnly( 'spawn' )
spawnShell = runtimeOnly( 'spawnShell' )
observefd = runtimeOnly( 'observefd' )
nonobservefd = runtimeOnly( 'nonobservefd' )
alarm = runtimeOnly( 'alarm' )

function string.starts( s, start ) return string.sub( s, 1, #start ) == start end
function string.ends( s, e ) return e == '' or string.sub( s, -#e ) == e end

-- lsyncd's layer inheritance: keys of the user's table first, then every
-- table at an integer index (a layer such as default.rsync), recursively;
-- tables merge, a key already set is never overwritten.
local inheritKV
local function inherit( cd, cs, verbatim, skip )
	for k, v in pairs( cs ) do
		if ( type( k ) ~= 'number' or verbatim or cs._verbatim == true )
		and ( type( cs._merge ) ~= 'table' or cs._merge[ k ] == true ) then
			inheritKV( cd, k, v, skip )
		end
	end
	if cs._verbatim ~= true then
		for _, v in ipairs( cs ) do
			if type( v ) == 'table' then
				if not ( skip and skip[ v ] ) then inherit( cd, v, false, skip ) end
			else
				cd[ #cd + 1 ] = v
			end
		end
	end
end
inheritKV = function( cd, k, v, skip )
	if k == '_merge' or k == '_verbatim' then return end
	local dtype = type( cd[ k ] )
	if type( v ) == 'table' then
		if skip and skip[ v ] then return end
		if dtype == 'nil' then
			cd[ k ] = { }
			inherit( cd[ k ], v, k == 'exitcodes', skip )
		elseif dtype == 'table' and v._merge ~= false then
			inherit( cd[ k ], v, k == 'exitcodes', skip )
		end
	elseif dtype == 'nil' then
		cd[ k ] = v
	end
end

local function checkgauge( config, gauge, prefix, level )
	for k, v in pairs( config ) do
		if not gauge[ k ] then
			error( 'Parameter "'..prefix..k..'" unknown. ( if this is not a typo add it to checkgauge )', level )
		end
		if type( gauge[ k ] ) == 'table' then
			if type( v ) ~= 'table' then
				error( 'Parameter "'..prefix..k..'" must be a table.', level )
			end
			checkgauge( v, gauge[ k ], prefix..k..'.', level + 1 )
		end
	end
end

local function marker( ) end
local actions = { rsync = function( ) end, rsyncssh = function( ) end, direct = function( ) end }

default = {
	_merge = {
		action = true, checkgauge = true, collect = true, delay = true,
		init = true, maxDelays = true, maxProcesses = true, prepare = true,
	},
	checkgauge = {
		action = true, checkgauge = true, collect = true, delay = true,
		exitcodes = true, init = true, maxDelays = true, maxProcesses = true,
		onAttrib = true, onCreate = true, onModify = true, onDelete = true,
		onStartup = true, onMove = true, prepare = true, source = true,
		target = true,
	},
	action = marker, collect = marker, init = marker, prepare = marker,
	maxDelays = 1000,
	maxProcesses = 1,
	statusInterval = 10,
	rsyncExitCodes = { _merge = false, _verbatim = true },
	sshExitCodes = { _merge = false, _verbatim = true },
}

local rsyncKeys = { }
for _, k in ipairs( {
	'acls', 'append', 'append_verify', 'archive', 'backup', 'backup_dir',
	'binary', 'bwlimit', 'checksum', 'chown', 'chmod', 'compress',
	'copy_dirlinks', 'copy_links', 'cvs_exclude', 'dry_run', 'executability',
	'existing', 'group', 'groupmap', 'hard_links', 'ignore_times', 'inplace',
	'ipv4', 'ipv6', 'keep_dirlinks', 'links', 'one_file_system',
	'omit_dir_times', 'omit_link_times', 'owner', 'password_file', 'perms',
	'protect_args', 'prune_empty_dirs', 'quiet', 'rsh', 'rsync_path', 'sparse',
	'suffix', 'temp_dir', 'timeout', 'times', 'update', 'usermap', 'verbose',
	'whole_file', 'xattrs', '_extra',
} ) do rsyncKeys[ k ] = true end

default.rsync = {
	checkgauge = {
		onCreate = false, onModify = false, onDelete = false,
		onStartup = false, onMove = false,
		delete = true, exclude = true, excludeFrom = true, filter = true,
		filterFrom = true, target = true,
		rsync = rsyncKeys,
	},
	action = actions.rsync, init = marker, prepare = marker,
	delete = true,
	exitcodes = default.rsyncExitCodes,
	rsync = { binary = '/usr/bin/rsync', links = true, times = true, protect_args = true },
	delay = 15,
}

default.rsyncssh = {
	default.rsync,
	checkgauge = {
		default.rsync.checkgauge,
		target = false, onMove = true, host = true, targetdir = true,
		sshExitCodes = true, rsyncExitCodes = true,
		ssh = { binary = true, identityFile = true, options = true, port = true, _extra = true },
	},
	action = actions.rsyncssh, collect = marker, prepare = marker,
	maxProcesses = 1,
	onMove = true,
	delay = 15,
	exitcodes = false,
	rsyncExitCodes = default.rsyncExitCodes,
	sshExitCodes = default.sshExitCodes,
	ssh = { binary = '/usr/bin/ssh' },
}

default.direct = {
	checkgauge = {
		default.rsync.checkgauge,
		rsyncExitCodes = true, onMove = true,
	},
	action = actions.direct, collect = marker, init = marker, prepare = marker,
	delay = 1,
	onMove = true,
	rsync = default.rsync.rsync,
	rsyncExitCodes = default.rsyncExitCodes,
	delete = true,
	maxProcesses = 1,
}

-- The tables a user's layer may name: skipped when listing what the user set.
local defaults = { }
for _, t in pairs( { default, default.rsync, default.rsyncssh, default.direct } ) do
	defaults[ t ] = true
end

function sync( opts )
	if settings ~= settingsSafe then
		error( 'Do not use settings = { ... }; please use settings{ ... } (without the equal sign)', 2 )
	end
	if type( opts ) ~= 'table' then error( 'sync{ ... } takes a table', 2 ) end
	local user = { }
	inherit( user, opts, false, defaults )
	local config = { }
	inherit( config, opts )
	inherit( config, default )
	for _, k in ipairs( { 'delay', 'maxDelays', 'maxProcesses' } ) do
		if records.settings[ k ] then config[ k ] = records.settings[ k ] end
	end
	local mode = nil
	for name, fn in pairs( actions ) do
		if config.action == fn then mode = name end
	end
	if mode then
		if mode == 'rsyncssh' then
			if config.maxProcesses ~= 1 then error( 'default.rsyncssh must have maxProcesses set to 1.', 2 ) end
			if not config.host then error( 'default.rsyncssh needs "host" configured', 2 ) end
			if not config.targetdir then error( 'default.rsyncssh needs "targetdir" configured', 2 ) end
		elseif not config.target then
			error( 'default.'..mode..' needs "target" configured', 2 )
		end
		checkgauge( config, config.checkgauge, '', 3 )
	elseif not config.action and not config.onAttrib and not config.onCreate
	and not config.onModify and not config.onDelete and not config.onMove then
		error( 'no actions specified.', 2 )
	end
	if not config.source then error( 'source missing from sync.', 2 ) end
	local custom = { }
	for _, k in ipairs( { 'action', 'collect', 'init', 'prepare', 'onAttrib',
		'onCreate', 'onModify', 'onDelete', 'onStartup', 'onMove' } ) do
		local v = user[ k ]
		if v ~= nil and not ( k == 'onMove' and v == true ) then custom[ #custom + 1 ] = k end
	end
	table.sort( custom )
	records.syncs[ #records.syncs + 1 ] = { user = user, config = config, mode = mode, custom = custom }
	-- lsyncd returns the sync's inlet; its functions work only at run time.
	return setmetatable( { }, { __index = function( _, k )
		return function( ) records.notes[ #records.notes + 1 ] = 'inlet.'..tostring( k ) end
	end } )
end
